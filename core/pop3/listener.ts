/**
 * One POP3 listener (tcpserver running qmail-popup): plain or STLS on a
 * net.Server, pop3s on a tls.Server. Each connection is a Pop3Session
 * with the listener's plugins and limits as they were when it arrived.
 */
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { ListenerTls } from '../session/tls.js';
import type { ListenerRuntime, SessionEnv } from '../session/runtime.js';
import { plainIp, socketEndpoints, type Endpoints } from './connection.js';
import { Pop3Session } from './session.js';
import { IpConnections, type IpSlot } from '../session/ip-connections.js';
import type { ListenOptions } from '../session/listen.js';
import { proxyTrust, type ClientEndpoints } from '../net/proxy-protocol.js';

/** Longest a pop3s client may take over its handshake before it has a session to time out in. */
const MAX_HANDSHAKE_MS = 60_000;

export class Pop3Listener {
  private readonly server: net.Server;
  private readonly sessions = new Set<Pop3Session>();
  /** Every TCP connection, sessions or not: a pop3s handshake in progress has no session yet. */
  private readonly sockets = new Set<net.Socket>();
  private readonly perIp = new IpConnections();
  /** The key pair and TLS policy STLS upgrades with, made once. */
  private readonly stlsContext: tls.SecureContext | undefined;
  private draining = false;

  constructor(
    public runtime: ListenerRuntime,
    readonly env: SessionEnv,
    readonly tlsSettings: ListenerTls,
    private readonly log: Logger,
  ) {
    // allowHalfOpen: a client that pipelines QUIT and shuts its side still gets every answer.
    const context = tlsSettings.keyPair ? tls.createSecureContext({ ...tlsSettings.keyPair, ...tlsSettings.policy }) : undefined;
    if (tlsSettings.mode === 'implicit' && !context) throw new Error(`listener ${runtime.name}: implicit TLS needs a certificate`);
    this.stlsContext = tlsSettings.mode === 'starttls' ? context : undefined;
    const implicit = tlsSettings.mode === 'implicit' ? context : undefined;
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => this.arrive(socket, implicit));
    this.server.on('connection', (socket: net.Socket) => {
      this.sockets.add(socket);
      socket.on('error', () => undefined); // reported by the session or the handshake
      socket.once('close', () => this.sockets.delete(socket));
    });
    this.server.on('error', (err: Error) => this.log.error({ listener: this.name, err: err.message }, 'listener error'));
  }

  get name(): string {
    return this.runtime.name;
  }

  /**
   * After a reload. Nothing to copy: each session reads the limits from the
   * runtime it started with, so new connections get the new ones and those in
   * progress keep theirs. (The pop3s handshake timeout stays as it was at start.)
   */
  applyLimits(): void {}

  async listen(options: ListenOptions = {}): Promise<AddressInfo> {
    const { host, port } = this.runtime.config.listen;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ port, host, ipv6Only: options.ipv6Only ?? false }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.address();
  }

  /** Connections open now (a pop3s handshake in progress included), for `yubin status`. */
  openConnections(): number {
    return this.sockets.size;
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /**
   * Stops accepting. Sessions waiting for a command are told `-ERR [SYS/TEMP]`
   * and closed at once, one in the middle of a command (a long RETR) after it;
   * none applies its deletions. What is left at the deadline is cut off.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const session of this.sessions) session.shutdown();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all([...this.sessions].map((s) => s.done)), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    for (const session of this.sessions) session.destroy();
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  /** A new TCP connection: the PROXY header first on a listener behind a proxy, then the pop3s handshake, then the session. */
  private arrive(socket: net.Socket, implicit: tls.SecureContext | undefined): void {
    const start = (client: ClientEndpoints | undefined) => (implicit ? this.handshake(socket, implicit, client) : this.accept(socket, false, client));
    const trust = proxyTrust(this.runtime.config.proxy);
    if (!trust) return start(undefined);
    const peer = plainIp(socket.remoteAddress);
    const metrics = this.env.metrics.listener(this.name);
    if (!trust.trusts(peer)) {
      metrics.connection('proxy-failed');
      this.log.info({ listener: this.name, ip: peer, reason: 'not a trusted proxy' }, 'connection refused: this listener takes connections through its proxy only');
      // Plain text is an answer only where the client reads plain text first: not into a TLS handshake.
      if (implicit) socket.destroy();
      else this.refuse(socket, '-ERR [SYS/PERM] connections through the proxy only\r\n');
      return;
    }
    trust.read(socket).then(
      (client) => {
        if (socket.destroyed) return;
        start(client);
      },
      (err: Error) => {
        metrics.connection('proxy-failed');
        this.log.info({ listener: this.name, ip: peer, reason: err.message }, 'bad PROXY header, connection dropped');
        socket.destroy();
      },
    );
  }

  /** One line, then closed (at once if the client does not hang up first). */
  private refuse(socket: net.Socket, line: string): void {
    socket.end(line);
    setTimeout(() => socket.destroy(), 1_000).unref();
  }

  private handshakeTimeout(): number {
    return Math.min(MAX_HANDSHAKE_MS, this.runtime.config.limits.idleTimeout);
  }

  /**
   * pop3s: the TLS handshake before there is a session. It is bounded in time, and a
   * client that fails it or hangs up in the middle of it is closed at once (with
   * allowHalfOpen, nothing else would close a socket whose client sent its FIN).
   */
  private handshake(raw: net.Socket, secureContext: tls.SecureContext, client: ClientEndpoints | undefined): void {
    const socket = new tls.TLSSocket(raw, { isServer: true, secureContext });
    let done = false;
    const give = (why: string, err?: Error & { code?: string }) => {
      if (done) return;
      done = true;
      this.env.metrics.listener(this.name).connection('tls-failed');
      this.log.info({ listener: this.name, ip: client?.remoteIp ?? plainIp(raw.remoteAddress), err: err?.message ?? why, code: err?.code }, 'TLS handshake failed');
      socket.destroy();
    };
    socket.setTimeout(this.handshakeTimeout(), () => give('handshake timed out'));
    socket.once('error', (err: Error) => give('error', err));
    socket.once('end', () => give('client hung up'));
    raw.once('end', () => give('client hung up'));
    raw.once('close', () => give('connection closed'));
    socket.once('secure', () => {
      if (done) return;
      done = true;
      socket.setTimeout(0);
      socket.removeAllListeners('timeout');
      this.accept(socket, true, client);
    });
  }

  /** `client`: who the PROXY header said the client is; undefined: the socket's own endpoints. */
  private accept(socket: net.Socket | tls.TLSSocket, secure: boolean, client: ClientEndpoints | undefined): void {
    const endpoints = client ?? socketEndpoints(socket);
    socket.on('error', () => undefined); // until the session's own handlers are on
    if (this.draining) {
      socket.destroy();
      return;
    }
    const runtime = this.runtime;
    const shared = this.env.sharedSlots;
    if (shared) {
      // In a cluster worker the counts are the primary's, across workers: one IPC round trip before the greeting.
      shared.acquire(runtime.name, endpoints.remoteIp).then(
        (slot) => {
          if (socket.destroyed || this.draining || slot.total > runtime.config.limits.maxConnections) {
            slot.release();
            if (!socket.destroyed && !this.draining) this.tooMany(socket, endpoints.remoteIp);
            else socket.destroy();
            return;
          }
          this.open(runtime, socket, secure, slot, endpoints);
        },
        () => socket.destroy(),
      );
      return;
    }
    if (this.sessions.size >= runtime.config.limits.maxConnections) return this.tooMany(socket, endpoints.remoteIp);
    this.open(runtime, socket, secure, this.perIp.add(endpoints.remoteIp), endpoints);
  }

  private tooMany(socket: net.Socket, ip: string): void {
    const runtime = this.runtime;
    this.env.metrics.listener(runtime.name).connection('too-many');
    this.log.info({ listener: runtime.name, ip, limit: runtime.config.limits.maxConnections }, 'too many connections, refused');
    this.refuse(socket, '-ERR [SYS/TEMP] too many connections\r\n');
  }

  private open(runtime: ListenerRuntime, socket: net.Socket | tls.TLSSocket, secure: boolean, slot: IpSlot, endpoints: Endpoints): void {
    runtime.lease?.acquire();
    const session = new Pop3Session(runtime, this.env, this.stlsContext, socket, secure, endpoints, slot);
    this.sessions.add(session);
    void session.done.finally(() => {
      this.sessions.delete(session);
      slot.release();
      runtime.lease?.release();
    });
  }
}

