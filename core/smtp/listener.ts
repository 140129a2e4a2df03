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
import { normalizeIp } from '../ip.js';
import { proxyTrust, type ClientEndpoints } from '../net/proxy-protocol.js';
import { IpConnections, PendingSlot } from '../session/ip-connections.js';
import type { ListenOptions } from '../session/listen.js';
import type { ListenerRuntime, SessionEnv } from '../session/runtime.js';
import type { ListenerTls } from '../session/tls.js';
import { ParkedConnection, YubinConnection, type SessionFactory } from './connection.js';
import { ParkingLot } from './parking.js';
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

/** Socket errors that only say the client went away: not worth a log line for a parked client (smtp-server's list). */
const QUIET_SOCKET_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

class YubinSmtpServer extends AdaptedServer implements SessionFactory {
  private readonly bySession = new WeakMap<SMTPServerSession, YubinConnection>();
  /** Greeted clients that have not said anything yet, each held as a socket and a ParkedConnection. */
  private readonly lot = new ParkingLot<ParkedConnection>({
    data: (p, chunk) => {
      p.socket.unshift(chunk);
      this.unpark(p);
    },
    expired: (p) => this.unpark(p).idleExpired(),
    closed: (p) => {
      p.timeLimits.stop();
      p.session.end();
    },
    error: (p, err: Error & { code?: string }) => {
      if (!QUIET_SOCKET_ERRORS.has(err.code ?? '')) this.socketError(err, p.remoteIp);
    },
  });

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

  get parkedCount(): number {
    return this.lot.size;
  }

  parkIdle(conn: YubinConnection): void {
    const parked = conn.park((p) => this.unpark(p));
    if (parked) this.lot.park(parked);
  }

  /** A whole connection again for a parked socket, ready for the client's first command. */
  private unpark(p: ParkedConnection): YubinConnection {
    this.lot.take(p.socket);
    // The addresses the first connection had, which may be a PROXY header's rather than the socket's.
    const connection = new YubinConnection(this, p.socket, { id: p.id, remoteAddress: p.remoteIp, remotePort: p.remotePort, localAddress: p.localIp, localPort: p.localPort }, p);
    this.bySession.set(connection.session, connection);
    this.adopt(connection);
    connection.resume(p.clientHostname);
    return connection;
  }

  /** Closes every parked socket without a word (the end of a drain). */
  dropParked(): void {
    for (const p of this.lot.takeAll()) {
      p.socket.destroy();
      p.timeLimits.stop();
      p.session.end();
    }
  }

  createSession(conn: YubinConnection): SmtpSession {
    return new SmtpSession(this.listener.runtime, this.listener.env, conn);
  }

  protected override expectsPreamble(): boolean {
    return this.listener.runtime.config.proxy !== undefined;
  }

  protected override readPreamble(socket: net.Socket): Promise<ClientEndpoints | undefined> {
    return this.listener.readProxyHeader(socket);
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
  private readonly open = new Set<SmtpSession>();
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
      // smtp-server checks the DSN parameters (RFC 3461) and REQUIRETLS (RFC 8689, only over TLS); the EHLO keywords are connection.ts's.
      hideDSN: false,
      hideREQUIRETLS: false,
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

  /**
   * A connection on a listener behind a proxy, before its session: the client the
   * PROXY header names (undefined: the socket's own, for UNKNOWN and LOCAL). A peer
   * not in `proxy.trusted` is refused unread; a bad or missing header drops the
   * connection. Either way one log line, and the promise rejects.
   */
  async readProxyHeader(socket: net.Socket): Promise<ClientEndpoints | undefined> {
    const trust = proxyTrust(this.runtime.config.proxy);
    if (!trust) return undefined;
    const peer = normalizeIp(socket.remoteAddress ?? '');
    const metrics = this.env.metrics.listener(this.name);
    if (!trust.trusts(peer)) {
      metrics.connection('proxy-failed');
      this.log.info({ listener: this.name, ip: peer, reason: 'not a trusted proxy' }, 'connection refused: this listener takes connections through its proxy only');
      // Plain text is an answer only where the client speaks first in plain text: not into a TLS handshake.
      if (!this.server.options.secure) socket.end(`421 4.7.0 ${this.env.hostname} Connections through the proxy only\r\n`);
      throw new Error(`${peer} is not a trusted proxy`);
    }
    try {
      return await trust.read(socket);
    } catch (err) {
      metrics.connection('proxy-failed');
      this.log.info({ listener: this.name, ip: peer, reason: (err as Error).message }, 'bad PROXY header, connection dropped');
      throw err;
    }
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
    // The session, not the connection: a parked connection's session outlives the connection object.
    const session = conn.yubin;
    const lease = session.runtime.lease;
    this.open.add(session);
    lease?.acquire();
    const shared = this.env.sharedSlots;
    let slot: { release(): void };
    if (shared) {
      // Counted by the cluster's primary: the greeting waits for the counts (connection.ts, socketReady).
      const pending = (session.slotPending = new PendingSlot(shared.acquire(this.name, conn.remoteIp)));
      void pending.ready.then((s) => (session.ipSlot = s), () => undefined);
      slot = pending;
    } else {
      slot = session.ipSlot = this.perIp.add(conn.remoteIp);
    }
    // A client that keeps a connection busy forever (a slow drip of RCPTs) is cut off after the limit.
    conn.limitTime({ total: session.limits.maxConnectionTime });
    session.connection.onClose(() => {
      this.open.delete(session);
      slot.release();
      lease?.release();
    });
  }

  /** After a message: a draining listener lets the client go now the transaction is done. */
  afterTransaction(conn: YubinConnection): void {
    if (this.draining) setImmediate(() => this.dismiss(conn.yubin));
  }

  /** Stops accepting; idle sessions get 421 at once, busy ones after their transaction. */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.server.close(() => resolve()));
    // TLS handshakes still in progress have no session to finish.
    this.server.destroyPendingSockets();
    const deadline = Date.now() + timeoutMs;
    while (this.open.size > 0 && Date.now() < deadline) {
      for (const session of this.open) if (!session.busy && !session.inTransaction) this.dismiss(session);
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const session of this.open) this.dismiss(session);
    // A client that does not hang up after the 421 is cut off.
    for (const conn of this.server.connections) (conn as YubinConnection).drop();
    this.server.dropParked();
    await closed;
  }

  /** Connections open now, for `yubin status`. */
  openConnections(): number {
    return this.open.size;
  }

  private dismiss(session: SmtpSession): void {
    if (!this.open.has(session)) return;
    this.open.delete(session);
    session.dismiss('4.3.2 Server shutting down, try again later');
  }
}
