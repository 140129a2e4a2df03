/**
 * The HTTP side of the action layer: each action is `/api/v1/PATH`. A JSON
 * request gets JSON; a form post (application/x-www-form-urlencoded) gets a
 * 303 back to its page with a flash message. Login and logout live here too.
 *
 * Changes authenticated by the session cookie need the session's CSRF token
 * (`_csrf` field or `x-csrf-token` header); bearer-token requests do not,
 * since no browser adds an Authorization header by itself.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type {} from '@fastify/cookie';
import { ACTIONS, ActionError, adminsDomain, type Action, type Fields } from './actions/index.js';
import { login, roleOf, whoIs, type Who } from './auth.js';
import type { WebadminContext } from './context.js';
import { loginPage, errorPage } from './pages.js';
import { COOKIE, csrfMatches, type Session } from './sessions.js';

export const API = '/api/v1';

export function isForm(req: FastifyRequest): boolean {
  return (req.headers['content-type'] ?? '').toLowerCase().startsWith('application/x-www-form-urlencoded');
}

function fields(req: FastifyRequest): Fields {
  const b = req.body;
  return typeof b === 'object' && b !== null && !Array.isArray(b) ? (b as Fields) : {};
}

/** Where a form goes back to: a path on this site only (no `//host`, no scheme). */
export function backPath(body: Fields, fallback: string): string {
  const b = body._back;
  return typeof b === 'string' && /^\/(?![/\\])[^\s\\]*$/.test(b) ? b : fallback;
}

function presentedCsrf(req: FastifyRequest, body: Fields): unknown {
  return body._csrf ?? req.headers['x-csrf-token'];
}

export function cookieOptions(https: boolean, maxAgeSeconds?: number) {
  return { path: '/', httpOnly: true, sameSite: 'strict' as const, secure: https, ...(maxAgeSeconds !== undefined ? { maxAge: maxAgeSeconds } : {}) };
}

/** May WHO run ACTION with these path parameters? */
export function allowed(action: Pick<Action, 'role'>, who: Who, params: Readonly<Record<string, string>>): boolean {
  if (action.role === 'server') return who.role === 'server';
  if (action.role === 'domain') return adminsDomain(who, params.domain ?? '');
  return true;
}

function flashAndBack(reply: FastifyReply, session: Session | undefined, kind: 'ok' | 'error', text: string, back: string, detail?: string) {
  if (session) session.flash = { kind, text, detail };
  return reply.code(303).header('location', back).send();
}

export function registerApi(app: FastifyInstance, ctx: WebadminContext, https: boolean): void {
  const { log } = ctx;

  for (const action of ACTIONS) {
    app.route({
      method: action.method,
      url: `${API}${action.path}`,
      async handler(req, reply) {
        const form = isForm(req);
        const body = fields(req);
        const params = req.params as Record<string, string>;
        const back = backPath(body, '/');
        const who = await whoIs(ctx, req);
        if (!who) return form ? reply.code(303).header('location', '/login').send() : reply.code(401).send({ error: 'not logged in' });
        if (action.method === 'POST' && who.via === 'session' && !csrfMatches(who.session!, presentedCsrf(req, body))) {
          return sendError(reply, form, 403, 'missing or wrong CSRF token: reload the page and try again', who);
        }
        if (!allowed(action, who, params)) return sendError(reply, form, 403, `a ${who.role === 'user' ? 'user' : `${who.role} admin`} may not do this${action.role === 'domain' ? ` for ${params.domain ?? 'that domain'}` : ''}`, who);
        try {
          const result = await action.run({ ctx, who, params, body, query: req.query as Record<string, string> });
          if (result.change) {
            // Who changed what, never with what password.
            log.info({ event: 'webadmin', who: who.address, role: who.role, action: result.change.action, target: result.change.target, via: who.via }, `webadmin: ${who.address} (${who.role}) ${result.change.action} ${result.change.target}`);
          }
          if (form && action.method === 'POST') return flashAndBack(reply, who.session, 'ok', result.message, back, result.detail);
          return reply.send(result.data);
        } catch (err) {
          if (!(err instanceof ActionError)) throw err;
          if (form && action.method === 'POST' && err.status !== 403) return flashAndBack(reply, who.session, 'error', err.message, back);
          return sendError(reply, form, err.status, err.message, who);
        }
      },
    });
  }

  const doLogin = async (req: FastifyRequest, reply: FastifyReply) => {
    const form = isForm(req);
    const body = fields(req);
    const session = ctx.sessions.get(req.cookies[COOKIE]);
    if (!session || !csrfMatches(session, presentedCsrf(req, body))) {
      return sendError(reply, form, 403, 'missing or wrong CSRF token: reload the login page and try again', undefined);
    }
    const address = typeof body.address === 'string' ? body.address : '';
    const password = typeof body.password === 'string' ? body.password : '';
    const outcome = await login(ctx, req.ip, address, password);
    if (!outcome.ok) {
      if (form) return reply.code(outcome.status).type('text/html; charset=utf-8').send(loginPage(session, address, outcome.message).text);
      return reply.code(outcome.status).send({ error: outcome.message });
    }
    // A new id at login: an id someone planted before it is worth nothing after.
    ctx.sessions.delete(session.id);
    const fresh = ctx.sessions.create(outcome.address);
    reply.setCookie(COOKIE, fresh.id, cookieOptions(https, Math.floor(ctx.options.sessionTtl / 1000)));
    if (form) return reply.code(303).header('location', '/').send();
    // JSON clients send this token as x-csrf-token with their changes.
    return reply.send({ address: outcome.address, role: (await roleOf(ctx, outcome.address))?.role, csrf: fresh.csrf });
  };
  app.post('/login', doLogin);
  app.post(`${API}/login`, doLogin);

  const doLogout = async (req: FastifyRequest, reply: FastifyReply) => {
    const form = isForm(req);
    const body = fields(req);
    const session = ctx.sessions.get(req.cookies[COOKIE]);
    if (!session?.address) return form ? reply.code(303).header('location', '/login').send() : reply.code(401).send({ error: 'not logged in' });
    if (!csrfMatches(session, presentedCsrf(req, body))) return sendError(reply, form, 403, 'missing or wrong CSRF token', undefined);
    ctx.sessions.delete(session.id);
    reply.clearCookie(COOKIE, cookieOptions(https));
    log.info({ event: 'webadmin-logout', user: session.address }, `webadmin logout of ${session.address}`);
    return form ? reply.code(303).header('location', '/login').send() : reply.send({ ok: true });
  };
  app.post('/logout', doLogout);
  app.post(`${API}/logout`, doLogout);
}

export function sendError(reply: FastifyReply, html: boolean, status: number, message: string, who: Who | undefined) {
  if (html) return reply.code(status).type('text/html; charset=utf-8').send(errorPage(status, message, who).text);
  return reply.code(status).send({ error: message });
}
