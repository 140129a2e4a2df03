/**
 * A raw POP3 client for tests: sends exactly what it is told (pipelined
 * commands, junk, half a line) and returns replies byte for byte, so a test
 * can check what the server put on the wire rather than what a forgiving
 * client library made of it.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface Pop3ConnectOptions {
  readonly host?: string;
  /** Implicit TLS (pop3s). */
  readonly tls?: boolean;
  /** Bytes sent first, before TLS and before the greeting: a PROXY header, as a load balancer sends it. */
  readonly preamble?: Buffer | string;
  /** How long to wait for the greeting and each reply (default 5 s). */
  readonly timeout?: number;
}

export interface Pop3Multiline {
  readonly status: string;
  /** The lines between the status line and the final `.`, still dot-stuffed. */
  readonly lines: string[];
}

const CRLF = Buffer.from('\r\n');

export class Pop3TestClient {
  private buffer: Buffer = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private ended = false;
  /** The greeting line (the first reply). */
  greeting = '';
  /** Resolves when the server has closed the connection. */
  readonly closed: Promise<void>;
  private markClosed!: () => void;

  private constructor(
    private socket: net.Socket,
    private readonly timeout: number,
  ) {
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
    this.listen(socket);
  }

  static async connect(port: number, options: Pop3ConnectOptions = {}): Promise<Pop3TestClient> {
    const host = options.host ?? '127.0.0.1';
    const plain = net.connect({ host, port });
    if (options.preamble !== undefined) plain.write(options.preamble);
    const socket = options.tls ? tls.connect({ socket: plain, rejectUnauthorized: false }) : plain;
    await new Promise<void>((resolve, reject) => {
      socket.once(options.tls ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    const client = new Pop3TestClient(socket, options.timeout ?? 5_000);
    client.greeting = await client.readLine();
    return client;
  }

  get isClosed(): boolean {
    return this.ended;
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Sends one command line and returns the status line of its reply. */
  async command(line: string): Promise<string> {
    this.write(`${line}\r\n`);
    return this.readLine();
  }

  /** Sends a command whose `+OK` answer has several lines. */
  async multiline(line: string): Promise<Pop3Multiline> {
    this.write(`${line}\r\n`);
    return this.readMultiline();
  }

  async readMultiline(): Promise<Pop3Multiline> {
    const status = await this.readLine();
    if (!status.startsWith('+OK')) return { status, lines: [] };
    const lines: string[] = [];
    for (;;) {
      const line = await this.readLine();
      if (line === '.') return { status, lines };
      lines.push(line);
    }
  }

  /**
   * RETR or TOP: the status line and the exact bytes between it and the
   * terminating `.` line (as sent, dot-stuffing included).
   */
  async retrieve(line: string): Promise<{ status: string; body: Buffer }> {
    this.write(`${line}\r\n`);
    const status = await this.readLine();
    if (!status.startsWith('+OK')) return { status, body: Buffer.alloc(0) };
    let from = 0;
    for (;;) {
      const end = this.buffer.subarray(0, 3).equals(Buffer.from('.\r\n')) ? 0 : this.buffer.indexOf('\r\n.\r\n', from);
      if (end === 0) {
        this.buffer = this.buffer.subarray(3);
        return { status, body: Buffer.alloc(0) };
      }
      if (end > 0) {
        const body = Buffer.from(this.buffer.subarray(0, end + 2));
        this.buffer = this.buffer.subarray(end + 5);
        return { status, body };
      }
      from = Math.max(0, this.buffer.length - 4);
      await this.more();
    }
  }

  /** One reply line without its CRLF. */
  async readLine(timeout = this.timeout): Promise<string> {
    for (;;) {
      const i = this.buffer.indexOf(CRLF);
      if (i >= 0) {
        const line = this.buffer.subarray(0, i).toString('utf8');
        this.buffer = this.buffer.subarray(i + 2);
        return line;
      }
      await this.more(timeout);
    }
  }

  /** Everything received but not read yet. */
  pending(): Buffer {
    return this.buffer;
  }

  /** STLS from the client side: after the server's +OK, the handshake over the same connection. */
  async upgrade(): Promise<void> {
    const raw = this.socket;
    raw.removeAllListeners('data');
    raw.removeAllListeners('end');
    raw.removeAllListeners('close');
    const secure = tls.connect({ socket: raw, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.buffer = Buffer.alloc(0);
    this.socket = secure;
    this.listen(secure);
  }

  /** Shuts down the sending side (half-close): the server still owes answers to what was sent. */
  endInput(): void {
    this.socket.end();
  }

  /** Hangs up without QUIT. */
  close(): void {
    this.socket.destroy();
  }

  private listen(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
      this.notify();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.ended = true;
      this.markClosed();
      this.notify();
    });
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private more(timeout = this.timeout): Promise<void> {
    if (this.ended) return Promise.reject(new Error(`connection closed; unread: ${JSON.stringify(this.buffer.toString())}`));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        reject(new Error(`no reply within ${timeout} ms; unread: ${JSON.stringify(this.buffer.toString())}`));
      }, timeout);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}
