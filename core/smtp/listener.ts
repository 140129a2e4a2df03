/**
 * One SMTP listener: an smtp-server instance whose connections are
 * YubinConnections, wired to the sessions, with its own plugin pipeline.
 */
import type { AddressInfo } from 'node:net';
import type net from 'node:net';
import type tls from 'node:tls';
import type { SMTPServer, SMTPServerAuthentication, SMTPServerAuthenticationResponse, SMTPServerAddress, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { Logger } from 'pino';
import { formatReply } from '../answers.js';
import { IpConnections, PendingSlot } from '../session/ip-connections.js';
import type { ListenOptions } from '../session/listen.js';
import type { ListenerRuntime, SessionEnv } from '../session/runtime.js';
import type { ListenerTls } from '../session/tls.js';
import { YubinConnection, type SessionFactory } from './connection.js';
import { AdaptedServer, isTlsHandshakeError, type SMTPConnectionOptions } from './smtp-server-adapter.js';
import { SmtpSession, type Outcome } from './session.js';

/** The SASL mechanisms smtp-server implements. */
export const SASL_METHODS = ['PLAIN', 'LOGIN', 'CRAM-MD5'] as const;

type Callback<T = void> = (err?: Error | null, result?: T) => void;

/** An Error that carries the outcome, for smtp-server callbacks that only take errors. */
function failure(outcome: Outcome): Error & { responseCode: number; outcome: Outcome } {
  const reply = outcome.reply;
  return Object.assign(new Error(reply.enhanced ? formatReply(reply) : reply.text), { responseCode: reply.code, outcome });
}

class YubinSmtpServer extends AdaptedServer implements SessionFactory {
  private readonly bySession = new WeakMap<SMTPServerSession, YubinConnection>();

  constructor(
    private readonly listener: SmtpListener,
    options: ConstructorParameters<typeof SMTPServer>[0],
  ) {
    super(options);
  }

  get maxLineLength(): number {
    return this.listener.runtime.config.limits.maxLineLength;
  }

  get firstCommandTimeout(): number {
    return this.listener.runtime.config.limits.firstCommandTimeout;
  }

  createSession(conn: YubinConnection): SmtpSession {
    return new SmtpSession(this.listener.runtime, this.listener.env, conn);
  }

  protected override createConnection(socket: net.Socket | tls.TLSSocket, socketOptions?: SMTPConnectionOptions | null): YubinConnection {
    const connection = new YubinConnection(this, socket, socketOptions);
    this.bySession.set(connection.session, connection);
    this.listener.track(connection);
    return connection;
  }

  private of(session: SMTPServerSession): YubinConnection {
    const conn = this.bySession.get(session);
    if (!conn) throw new Error(`no connection for session ${session.id}`);
    return conn;
  }

  override onConnect(session: SMTPServerSession, callback: Callback): void {
    const conn = this.of(session);
    conn.yubin.connect().then((outcome) => {
      if (!outcome.ok) return callback(failure(outcome));
      conn.greeting = outcome.reply;
      callback();
    }, callback);
  }

  override onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, callback: Callback<SMTPServerAuthenticationResponse>): void {
    const conn = this.of(session);
    const verify = (secret: string) => (typeof auth.validatePassword === 'function' ? auth.validatePassword(secret) : auth.password === secret);
    conn.yubin.auth(auth.method, auth.username ?? '', auth.method === 'CRAM-MD5' ? undefined : (auth.password ?? undefined), verify).then((outcome) => {
      if (!outcome.ok) return this.fail(conn, outcome, callback);
      conn.useOkReply(outcome.reply);
      callback(null, { user: auth.username });
    }, callback);
  }

  override onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, callback: Callback): void {
    const conn = this.of(session);
    conn.yubin.mail(address.address || '', address.args || {}).then((outcome) => {
      if (!outcome.ok) return this.fail(conn, outcome, callback);
      conn.useOkReply(outcome.reply);
      callback();
    }, callback);
  }

  override onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, callback: Callback): void {
    const conn = this.of(session);
    conn.yubin.rcpt(address.address, address.args || {}).then((outcome) => {
      if (!outcome.ok) return this.fail(conn, outcome, callback);
      conn.useOkReply(outcome.reply);
      callback();
    }, callback);
  }

  override onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: Callback<string>): void {
    const conn = this.of(session);
    conn.yubin.data(stream, () => conn.lineTooLong).then(
      (outcome) => {
        if (!outcome.ok) return this.fail(conn, outcome, callback);
        callback(null, formatReply(outcome.reply));
        this.listener.afterTransaction(conn);
      },
      (err: Error) => callback(err),
    );
  }

  override onClose(session: SMTPServerSession): void {
    this.bySession.get(session)?.yubin.end();
  }

  private fail<T>(conn: YubinConnection, outcome: Outcome, callback: Callback<T>): void {
    if (outcome.silent) conn.drop();
    callback(failure(outcome));
    // smtp-server closes by itself on 421; any other closing answer is closed here.
    if (outcome.close && outcome.reply.code !== 421) conn.close();
  }
}

function limitOptions(runtime: ListenerRuntime) {
  const limits = runtime.config.limits;
  return {
    size: limits.maxMessageSize,
    maxClients: limits.maxConnections,
    socketTimeout: limits.idleTimeout,
    maxCommandLength: limits.maxLineLength,
  };
}

export class SmtpListener {
  private readonly server: YubinSmtpServer;
  private readonly open = new Set<YubinConnection>();
  private readonly perIp = new IpConnections();
  private draining = false;

  constructor(
    public runtime: ListenerRuntime,
    readonly env: SessionEnv,
    tlsSettings: ListenerTls,
    private readonly log: Logger,
  ) {
    this.server = new YubinSmtpServer(this, {
      name: env.hostname,
      secure: tlsSettings.mode === 'implicit',
      ...(tlsSettings.keyPair ?? {}),
      ...tlsSettings.policy,
      disabledCommands: tlsSettings.mode === 'starttls' ? [] : ['STARTTLS'],
      hideSTARTTLS: tlsSettings.mode !== 'starttls',
      authOptional: true, // requireAuth is the session's rule, with its own reply
      allowInsecureAuth: true, // the session decides when AUTH is offered
      // Everything smtp-server can run; what is offered per connection is the session's choice.
      authMethods: [...SASL_METHODS],
      closeTimeout: 1000,
      disableReverseLookup: true,
      hideENHANCEDSTATUSCODES: false,
      hideDSN: true,
      hideREQUIRETLS: true,
      logger: false,
      ...limitOptions(runtime),
    });
    // Without a handler, one client's TLS alert or socket error would take the process down.
    this.server.on('error', (err: Error & { code?: string; remoteAddress?: string }) => {
      // On an implicit listener a TLS failure is a handshake before any session.
      if (tlsSettings.mode === 'implicit' && isTlsHandshakeError(err)) env.metrics.listener(this.runtime.name).connection('tls-failed');
      this.log.info({ listener: this.runtime.name, ip: err.remoteAddress, err: err.message, code: err.code }, 'client connection error');
    });
  }

  /** After a reload: new connections get the new limits (those in progress keep theirs). */
  applyLimits(): void {
    Object.assign(this.server.options, limitOptions(this.runtime));
  }

  get name(): string {
    return this.runtime.name;
  }

  async listen(options: ListenOptions = {}): Promise<AddressInfo> {
    const { host, port } = this.runtime.config.listen;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.server.once('error', onError);
      this.server.listen({ port, host, ipv6Only: options.ipv6Only ?? false }, () => {
        this.server.server.off('error', onError);
        resolve();
      });
    });
    return this.address();
  }

  address(): AddressInfo {
    return this.server.server.address() as AddressInfo;
  }

  track(conn: YubinConnection): void {
    const lease = conn.yubin.runtime.lease;
    this.open.add(conn);
    lease?.acquire();
    const shared = this.env.sharedSlots;
    let slot: { release(): void };
    if (shared) {
      // Counted by the cluster's primary: the greeting waits for the counts (connection.ts, socketReady).
      const pending = (conn.yubin.slotPending = new PendingSlot(shared.acquire(this.name, conn.remoteIp)));
      void pending.ready.then((s) => (conn.yubin.ipSlot = s), () => undefined);
      slot = pending;
    } else {
      slot = conn.yubin.ipSlot = this.perIp.add(conn.remoteIp);
    }
    // A client that keeps a connection busy forever (a slow drip of RCPTs) is cut off after the limit.
    conn.limitTime({ total: conn.yubin.limits.maxConnectionTime });
    conn.yubin.connection.onClose(() => {
      this.open.delete(conn);
      slot.release();
      lease?.release();
    });
  }

  /** After a message: a draining listener lets the client go now the transaction is done. */
  afterTransaction(conn: YubinConnection): void {
    if (this.draining) setImmediate(() => this.dismiss(conn));
  }

  /** Stops accepting; idle sessions get 421 at once, busy ones after their transaction. */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.server.close(() => resolve()));
    // TLS handshakes still in progress have no session to finish.
    this.server.destroyPendingSockets();
    const deadline = Date.now() + timeoutMs;
    while (this.open.size > 0 && Date.now() < deadline) {
      for (const conn of this.open) if (!conn.yubin.busy && !conn.yubin.inTransaction) this.dismiss(conn);
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const conn of this.open) this.dismiss(conn);
    // A client that does not hang up after the 421 is cut off.
    for (const conn of this.server.connections) (conn as YubinConnection).drop();
    await closed;
  }

  /** Connections open now, for `yubin status`. */
  openConnections(): number {
    return this.open.size;
  }

  private dismiss(conn: YubinConnection): void {
    if (!this.open.has(conn)) return;
    this.open.delete(conn);
    conn.send(421, '4.3.2 Server shutting down, try again later');
  }
}
