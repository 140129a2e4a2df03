/**
 * An http listener (`protocol: http`): one socket, and behind it a Fastify
 * app for what the config's `serve` names: `metrics` (GET /metrics in
 * Prometheus' text format from the server's own registry) and plugins with an
 * HTTP service (webadmin), each registered in its own Fastify scope. Plain
 * HTTP, or HTTPS from the first byte (`tls: implicit`) with the listener's
 * certificate and TLS profile, as the mail listeners have them.
 *
 * The socket is Node's own server; each configuration gets a new Fastify app
 * and the server hands every request to the current one (`app.routing`). So
 * a reload changes routes without closing the socket: Fastify cannot remove
 * routes from an app that is running, and rebinding the port would refuse
 * connections for a moment. Requests in progress finish on the app they
 * started on; that app's plugins stay open until it is retired.
 */
import http from 'node:http';
import https from 'node:https';
import { isIP, type AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { ConfigError, formatKeyPath, type LoadedConfig } from '../config/load.js';
import type { HttpListenerConfig } from '../config/schema.js';
import type { HttpListenerInfo, HttpService } from '../plugin.js';
import type { Metrics } from '../services/metrics.js';
import type { ListenOptions } from '../session/listen.js';
import type { KeyPair, TlsPolicy } from '../tls.js';

/** The listener's TLS as the server prepared it (certificate loaded or generated, profile applied). */
export interface HttpTls {
  readonly mode: 'none' | 'starttls' | 'implicit';
  readonly keyPair: KeyPair | undefined;
  readonly policy: TlsPolicy;
}

/** What one configuration gives a listener: its config and the plugins it serves. */
export interface HttpRuntime {
  readonly config: HttpListenerConfig;
  /** Plugins named in `serve`, in its order. */
  readonly services: ReadonlyArray<{ readonly name: string; readonly http: HttpService }>;
  /** Held while an app uses these plugins, so a reload closes them only when it is retired. */
  readonly lease?: { acquire(): void; release(): void };
}

/** A built app and the runtime it was built from. */
interface Mounted {
  readonly app: FastifyInstance;
  readonly runtime: HttpRuntime;
}

/** Keep-alive a little longer than common proxies' (60 s), as Fastify's own default does. */
const KEEP_ALIVE_MS = 72_000;
const REQUEST_TIMEOUT_MS = 60_000;

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  return isIP(h) === 4 && h.startsWith('127.');
}

/** A service that refused to mount on a listener (webadmin on plain HTTP off loopback): which one, where, and why. */
export class HttpServiceError extends Error {
  constructor(
    readonly listener: string,
    readonly service: string,
    readonly reason: string,
  ) {
    super(`listener ${listener}: ${service}: ${reason}`);
    this.name = 'HttpServiceError';
  }
}

/**
 * A refusal as a config problem, at the `serve` entry that names the service
 * (`yubin.yaml:12: listeners[1](web).serve[0]: webadmin: webadmin on listener web needs TLS: ...`):
 * what check-config reports and serve exits with (2).
 */
export function serviceConfigError(loaded: LoadedConfig, err: HttpServiceError): ConfigError {
  const i = loaded.config.listeners.findIndex((l) => l.name === err.listener);
  const l = loaded.config.listeners[i];
  const j = l?.protocol === 'http' ? l.serve.indexOf(err.service) : -1;
  const keyPath = j >= 0 ? ['listeners', i, 'serve', j] : ['listeners', i];
  return new ConfigError(loaded.file, [`${loaded.locate(keyPath)}: ${formatKeyPath(keyPath, loaded.config)}: ${err.service}: ${err.reason}`]);
}

/** What a service is told about the listener it is mounted on. */
export function httpListenerInfo(config: HttpListenerConfig, https: boolean): HttpListenerInfo {
  const { host, port } = config.listen;
  return { name: config.name, host, port, https, loopbackOnly: isLoopbackHost(host) };
}

/**
 * Registers each service on APP in a scope of its own, so one's hooks and
 * parsers (webadmin's security headers) do not reach another's routes. A
 * service that refuses fails `app.ready()` with an HttpServiceError.
 */
export function registerServices(app: FastifyInstance, config: HttpListenerConfig, info: HttpListenerInfo, services: HttpRuntime['services']): void {
  for (const { name, http: service } of services) {
    void app.register(async (scope) => {
      try {
        await service.routes(scope, info);
      } catch (err) {
        throw new HttpServiceError(config.name, name, (err as Error).message);
      }
    });
  }
}

/**
 * Mounts the services on a throwaway app, as a listener would, and closes it:
 * `yubin check-config` finds a service that refuses its listener without
 * opening a socket. HTTPS as the config says (`tls: implicit`).
 */
export async function checkServices(config: HttpListenerConfig, services: HttpRuntime['services']): Promise<void> {
  const app = Fastify({ logger: false });
  registerServices(app, config, httpListenerInfo(config, config.tls === 'implicit'), services);
  try {
    await app.ready();
  } finally {
    await app.close().catch(() => undefined);
  }
}

export class HttpListener {
  private readonly server: http.Server | https.Server;
  private current: Mounted | undefined;

  private constructor(
    private readonly metrics: Metrics,
    private readonly tls: HttpTls,
    private readonly log: Logger,
  ) {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      // Set before listen: no request arrives without an app.
      this.current!.app.routing(req, res);
    };
    this.server = tls.mode === 'implicit' ? https.createServer({ ...tls.keyPair!, ...tls.policy }, handler) : http.createServer(handler);
    this.server.keepAliveTimeout = KEEP_ALIVE_MS;
    this.server.requestTimeout = REQUEST_TIMEOUT_MS;
  }

  /** A listener with its first app built; listen() opens the socket. */
  static async create(runtime: HttpRuntime, metrics: Metrics, tls: HttpTls, log: Logger): Promise<HttpListener> {
    if (tls.mode === 'implicit' && !tls.keyPair) throw new Error(`listener ${runtime.config.name}: HTTPS needs a certificate`);
    const listener = new HttpListener(metrics, tls, log);
    listener.current = await listener.mount(runtime);
    metrics.enableProcessMetrics();
    return listener;
  }

  get name(): string {
    return this.config.name;
  }

  get config(): HttpListenerConfig {
    return this.current!.runtime.config;
  }

  /**
   * Builds the app for a new configuration: what a reload calls before it
   * commits to anything, so a service that refuses (webadmin without TLS off
   * loopback) fails the reload and the running app stays.
   */
  async prepare(runtime: HttpRuntime): Promise<{ commit(): void; cancel(): void }> {
    const next = await this.mount(runtime);
    return {
      commit: () => {
        const old = this.current;
        this.current = next;
        if (old) void this.retire(old);
      },
      cancel: () => void this.retire(next),
    };
  }

  private async mount(runtime: HttpRuntime): Promise<Mounted> {
    const { config } = runtime;
    // No request logging: a scrape every 15 s would be most of the log. Errors are logged below; services log their own decisions.
    const app = Fastify({ logger: false, return503OnClosing: true });
    app.setErrorHandler((err: Error & { statusCode?: number }, request, reply) => {
      const status = err.statusCode ?? 500;
      if (status >= 500) this.log.error({ listener: config.name, url: request.url, err: err.message }, 'HTTP request failed');
      void reply.code(status).send({ error: status >= 500 ? 'internal error' : err.message });
    });
    if (config.serve.includes('metrics')) {
      app.get('/metrics', async (_request, reply) => {
        const { contentType, body } = await this.metrics.scrape();
        return reply.type(contentType).send(body);
      });
    }
    registerServices(app, config, httpListenerInfo(config, this.tls.mode === 'implicit'), runtime.services);
    try {
      await app.ready();
    } catch (err) {
      await app.close().catch(() => undefined);
      throw err;
    }
    runtime.lease?.acquire();
    return { app, runtime };
  }

  private async retire(mounted: Mounted): Promise<void> {
    await mounted.app.close().catch((err: Error) => this.log.warn({ listener: mounted.runtime.config.name, err: err.message }, 'closing the previous HTTP app failed'));
    mounted.runtime.lease?.release();
  }

  async listen(options: ListenOptions = {}): Promise<AddressInfo> {
    const { host, port } = this.config.listen;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port, ipv6Only: options.ipv6Only ?? false }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.address();
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /** Stops accepting; requests in progress get `timeoutMs` to finish, then every connection is closed. */
  async drain(timeoutMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // Idle keep-alive connections would hold close() until they time out.
    this.server.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    this.server.closeAllConnections();
    await closed;
    if (this.current) await this.retire(this.current);
    this.current = undefined;
  }
}
