/**
 * What webadmin adds to an http listener: security headers, cookies, form
 * bodies, the pages and the API, in a scope of their own so another service
 * on the same listener (metrics) keeps its own headers and parsers.
 */
import cookie from '@fastify/cookie';
import formbody from '@fastify/formbody';
import helmet from '@fastify/helmet';
import type { FastifyError, FastifyInstance } from 'fastify';
import type { HttpListenerInfo } from '../../core/index.js';
import { isForm, registerApi, sendError } from './api.js';
import { registerAutoconfig } from './autoconfig.js';
import type { WebadminContext } from './context.js';
import { registerPages } from './pages.js';

export function webadminRoutes(app: FastifyInstance, listener: HttpListenerInfo, ctx: WebadminContext): void {
  // Passwords and session cookies over plain HTTP are only safe where nobody else can listen.
  if (!listener.https && !listener.loopbackOnly) {
    throw new Error(`webadmin on listener ${listener.name} needs TLS: plain HTTP is allowed on loopback only (set tls: implicit)`);
  }
  const https = listener.https;
  void app.register(async (scope) => {
    await scope.register(helmet, {
      contentSecurityPolicy: {
        useDefaults: false,
        directives: {
          defaultSrc: ["'self'"],
          scriptSrc: ["'none'"],
          styleSrc: ["'self'"],
          imgSrc: ["'self'"],
          formAction: ["'self'"],
          frameAncestors: ["'none'"],
          baseUri: ["'none'"],
          objectSrc: ["'none'"],
          // Plain HTTP is loopback only; asking the browser to upgrade there would break the forms.
          ...(https ? { upgradeInsecureRequests: [] } : {}),
        },
      },
      strictTransportSecurity: https ? { maxAge: 15_552_000 } : false,
    });
    await scope.register(cookie);
    await scope.register(formbody, { bodyLimit: 256 * 1024 });
    scope.setErrorHandler((err: FastifyError, req, reply) => {
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
      if (status === 500) ctx.log.error({ event: 'webadmin-error', url: req.url, err: err.message }, `webadmin: ${err.message}`);
      // One line naming the problem; the internals of a 500 stay in the log.
      const message = status === 500 ? 'internal error: see the server log' : err.message.split('\n')[0]!;
      return sendError(reply, isForm(req) || (req.headers.accept ?? '').includes('text/html'), status, message, undefined);
    });
    scope.setNotFoundHandler((req, reply) => sendError(reply, (req.headers.accept ?? '').includes('text/html'), 404, `nothing at ${req.method} ${req.url.split('?')[0]}`, undefined));
    registerApi(scope, ctx, https);
    registerPages(scope, ctx, https);
  });
  // Mail clients ask before anyone logs in: no session, no cookies, XML only.
  registerAutoconfig(app, ctx.config);
}
