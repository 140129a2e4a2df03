/**
 * The socket side of one POP3 connection: reads command lines, writes
 * replies with backpressure, upgrades to TLS for STLS and closes cleanly.
 * It knows nothing of POP3 commands; the session drives it.
 *
 * Every socket error ends up as the end of input (and writes that do
 * nothing), so a reset or a TLS alert from one client is a closed session,
 * never an exception that reaches the process.
 */
import type net from 'node:net';
import tls from 'node:tls';
import { LineReader, type LineEvent } from './lines.js';

type AnySocket = net.Socket | tls.TLSSocket;

/** Held replies are sent once they reach this many octets, without waiting for the end of the turn. */
const FLUSH_AT = 256 * 1024;
/** How long a closing connection waits for the client to hang up before cutting it off. */
const CLOSE_GRACE_MS = 1_000;

export class Wire {
  private socket: AnySocket;
  private readonly reader: LineReader;
  private gone = false;
  private closing: Promise<void> | undefined;
  private idleMs = 0;
  private onIdle: () => void = () => undefined;
  private drainWaiters: Array<() => void> = [];
  private markGone!: () => void;
  /** Resolves when the connection is gone, however it went. */
  readonly done: Promise<void>;
  /** A write is waiting for the client to read: the client, not the server, is slow. */
  writeBlocked = false;
  /** Waiting for the client's next line. */
  awaitingLine = false;
  /**
   * Called when the client has sent its last byte (its FIN) and no command of
   * it is left unread: nothing it sent is still to be answered but the one in
   * progress (the socket is half-open, so 'close' would only come at our close).
   */
  onInputEnd: (() => void) | undefined;
  /** A STLS handshake is under way. */
  handshaking = false;
  private isSecure: boolean;
  private lastError: Error | undefined;
  /** Writes of this turn of the event loop are held and go out together (see write). */
  private corked: AnySocket | undefined;

  constructor(socket: AnySocket, secure: boolean, maxLineLength: number) {
    this.socket = socket;
    this.isSecure = secure;
    this.reader = new LineReader(maxLineLength);
    this.done = new Promise<void>((resolve) => (this.markGone = resolve));
    this.attach(socket);
  }

  get secure(): boolean {
    return this.isSecure;
  }

  get closed(): boolean {
    return this.gone || this.closing !== undefined;
  }

  /** Why the connection failed, if a socket error ended it (for the close log line). */
  get error(): Error | undefined {
    return this.lastError;
  }

  /** Calls `onIdle` after `ms` without traffic; the session decides what that means. */
  setIdleTimeout(ms: number, onIdle: () => void): void {
    this.idleMs = ms;
    this.onIdle = onIdle;
    this.socket.setTimeout(ms);
  }

  /** Starts the idle clock again (Node does not re-arm it after it fired). */
  rearmIdle(): void {
    if (!this.gone) this.socket.setTimeout(this.idleMs);
  }

  async nextLine(): Promise<LineEvent> {
    this.awaitingLine = true;
    const event = await this.reader.next();
    this.awaitingLine = false;
    if (this.reader.hasRoom && !this.gone && this.socket.isPaused()) this.socket.resume();
    return event;
  }

  /** Writes and waits while the client is not reading; does nothing on a closed connection. */
  async write(data: string | Buffer): Promise<void> {
    if (this.gone || this.socket.destroyed || this.socket.writableEnded || data.length === 0) return;
    if (!this.corked) {
      // A client that pipelines (50 RETRs in flight) gets all the replies of one turn of the
      // event loop in one writev instead of a system call per reply.
      const socket = (this.corked = this.socket);
      socket.cork();
      setImmediate(() => this.uncork(socket));
    }
    const written = this.socket.write(data);
    // Enough for a few TCP segments: out it goes, so the client can send its next commands sooner.
    if (this.corked && this.socket.writableLength >= FLUSH_AT) this.uncork(this.corked);
    if (written) return;
    this.writeBlocked = true;
    try {
      await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
    } finally {
      this.writeBlocked = false;
    }
  }

  /**
   * STLS: whatever the client sent after the command, in the same packet or
   * before the handshake, is dropped, so clear text can never be run as if
   * it came through TLS (CVE-2011-0411). The caller has written the `+OK`;
   * it goes out first because the TLS socket takes over the same handle.
   * Resolves false when the handshake fails (the connection is then gone).
   */
  startTls(secureContext: tls.SecureContext): Promise<boolean> {
    this.reader.discard();
    const raw = this.socket;
    // The +OK goes out in clear before the TLS socket takes the handle over.
    this.uncork(raw);
    raw.removeAllListeners('data');
    raw.removeAllListeners('end');
    raw.removeAllListeners('timeout');
    raw.removeAllListeners('drain');
    raw.setTimeout(0);
    const secure = new tls.TLSSocket(raw as net.Socket, { isServer: true, secureContext });
    this.socket = secure;
    this.attach(secure);
    secure.setTimeout(this.idleMs);
    this.handshaking = true;
    // A client that hangs up before the handshake is done is gone: nothing will end the
    // TLS socket for it (there is no session yet to notice), so the slot is freed here.
    const abandoned = () => {
      if (this.handshaking) secure.destroy();
    };
    secure.once('end', abandoned);
    raw.once('end', abandoned);
    raw.once('close', abandoned);
    return new Promise<boolean>((resolve) => {
      secure.once('secure', () => {
        this.handshaking = false;
        this.isSecure = true;
        resolve(true);
      });
      void this.done.then(() => {
        this.handshaking = false;
        resolve(false);
      });
    });
  }

  /**
   * Sends what is queued, then closes. The client gets a moment to hang up
   * itself: closing while its pipelined input is unread would send a reset
   * that can overtake our last reply.
   */
  close(graceMs = CLOSE_GRACE_MS): Promise<void> {
    if (this.gone) return this.done;
    if (!this.closing) {
      const socket = this.socket;
      this.reader.end();
      socket.removeAllListeners('data');
      socket.removeAllListeners('timeout');
      socket.on('data', () => undefined);
      if (socket.isPaused()) socket.resume();
      socket.end();
      const timer = setTimeout(() => socket.destroy(), graceMs);
      timer.unref();
      this.closing = this.done.then(() => clearTimeout(timer));
    }
    return this.closing;
  }

  /** Cuts the connection off without another byte. */
  destroy(): void {
    this.socket.destroy();
  }

  private attach(socket: AnySocket): void {
    socket.on('data', (chunk: Buffer) => {
      this.reader.push(chunk);
      if (!this.reader.hasRoom) socket.pause();
    });
    // allowHalfOpen: a client that sends QUIT and shuts down its side still gets the answer.
    socket.on('end', () => {
      this.reader.end();
      if (this.reader.drained) this.onInputEnd?.();
    });
    socket.on('timeout', () => this.onIdle());
    socket.on('drain', () => this.releaseWriters());
    socket.on('error', (err: Error) => {
      this.lastError ??= err;
      socket.destroy();
    });
    socket.on('close', () => {
      if (socket !== this.socket) return; // the raw socket under TLS: the TLS socket reports for both
      this.gone = true;
      this.reader.end();
      this.releaseWriters();
      this.markGone();
    });
  }

  private uncork(socket: AnySocket): void {
    if (this.corked !== socket) return;
    this.corked = undefined;
    if (!socket.destroyed) socket.uncork();
  }

  private releaseWriters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }
}
