/**
 * An http listener (`protocol: http`): a Fastify server for what the config's
 * `serve` names. Today that is `metrics`, GET /metrics in Prometheus' text
 * format from the server's own registry; anything else is 404. Plain HTTP,
 * or HTTPS from the first byte (`tls: implicit`) with the listener's
 * certificate and TLS profile, as the mail listeners have them.
 */
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { HttpListenerConfig, HttpService } from '../config/schema.js';
import type { Metrics } from '../services/metrics.js';
import type { ListenOptions } from '../session/listen.js';
import type { KeyPair, TlsPolicy } from '../tls.js';

/** The listener's TLS as the server prepared it (certificate loaded or generated, profile applied). */
export interface HttpTls {
  readonly mode: 'none' | 'starttls' | 'implicit';
  readonly keyPair: KeyPair | undefined;
  readonly policy: TlsPolicy;
}

export class HttpListener {
  private readonly app: FastifyInstance;

  constructor(
    /** Replaced by a reload that keeps the socket: `serve` is read per request. */
    public config: HttpListenerConfig,
    private readonly metrics: Metrics,
    tls: HttpTls,
    private readonly log: Logger,
  ) {
    if (tls.mode === 'implicit' && !tls.keyPair) throw new Error(`listener ${config.name}: HTTPS needs a certificate`);
    // No request logging: a scrape every 15 s would be most of the log. Errors are logged below.
    const options = { logger: false, return503OnClosing: true } as const;
    this.app = tls.mode === 'implicit' ? (Fastify({ ...options, https: { ...tls.keyPair!, ...tls.policy } }) as unknown as FastifyInstance) : Fastify(options);
    this.app.setErrorHandler((err: Error & { statusCode?: number }, request, reply) => {
      const status = err.statusCode ?? 500;
      if (status >= 500) this.log.error({ listener: this.name, url: request.url, err: err.message }, 'HTTP request failed');
      void reply.code(status).send({ error: status >= 500 ? 'internal error' : err.message });
    });
    this.app.get('/metrics', async (_request, reply) => {
      if (!this.serves('metrics')) return reply.callNotFound();
      const { contentType, body } = await this.metrics.scrape();
      return reply.type(contentType).send(body);
    });
    this.metrics.enableProcessMetrics();
  }

  get name(): string {
    return this.config.name;
  }

  private serves(service: HttpService): boolean {
    return this.config.serve.includes(service);
  }

  async listen(options: ListenOptions = {}): Promise<AddressInfo> {
    const { host, port } = this.config.listen;
    await this.app.listen({ host, port, ipv6Only: options.ipv6Only ?? false });
    return this.address();
  }

  address(): AddressInfo {
    return this.app.server.address() as AddressInfo;
  }

  /** Stops accepting; requests in progress get `timeoutMs` to finish, then every connection is closed. */
  async drain(timeoutMs: number): Promise<void> {
    const closed = this.app.close();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    this.app.server.closeAllConnections();
    await closed;
  }
}
