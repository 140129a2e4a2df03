/**
 * A small SMTP client for tests: it sends exactly the bytes it is given and
 * reports every reply, so a test can probe pipelining, smuggling and
 * STARTTLS injection that a well-behaved client library would never send.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface SmtpReply {
  readonly code: number;
  /** The enhanced status code of the last line, if there is one. */
  readonly enhanced: string | undefined;
  /** Text of the last line, without code and enhanced code. */
  readonly text: string;
  /** Every line as received. */
  readonly lines: readonly string[];
}

export interface ConnectOptions {
  readonly host?: string;
  /** Source address, e.g. '127.0.0.5', to look like another client. */
  readonly localAddress?: string;
  /** Implicit TLS. */
  readonly tls?: boolean;
  /** Bytes sent first, before TLS and before the greeting: a PROXY header, as a load balancer sends it. */
  readonly preamble?: Buffer | string;
  /** Milliseconds to wait for each reply (default 10 s). */
  readonly timeout?: number;
}

export interface MailOptions {
  readonly from: string;
  readonly to: string | readonly string[];
  /** The message; bare LF line ends become CRLF, and dot-stuffing is applied. */
  readonly data: string;
}

export interface MailResult {
  readonly mail: SmtpReply;
  readonly rcpt: readonly SmtpReply[];
  /** The reply after the final dot; undefined when no recipient was accepted. */
  readonly data: SmtpReply | undefined;
}

/** Message text as it goes on the wire: CRLF line ends and dot-stuffed, with the terminator. */
export function toWire(data: string): string {
  const lines = data.replace(/\r?\n/g, '\n').replace(/\n$/, '').split('\n');
  return lines.map((l) => (l.startsWith('.') ? '.' + l : l)).join('\r\n') + '\r\n.\r\n';
}

export class SmtpTestClient {
  /** The 220 (or refusal) the server greeted with; undefined if it closed without a word. */
  greeting: SmtpReply | undefined;
  private socket: net.Socket;
  private buffer = '';
  private lines: string[] = [];
  private replies: SmtpReply[] = [];
  private waiters: Array<(r: SmtpReply | undefined) => void> = [];
  private ended = false;
  private resolveEnded!: () => void;
  private readonly endedPromise = new Promise<void>((resolve) => (this.resolveEnded = resolve));
  private readonly timeout: number;
  /** Every byte received, for tests that must show nothing came back. */
  received = '';

  private constructor(socket: net.Socket, timeout: number) {
    this.timeout = timeout;
    this.socket = socket;
    this.attach(socket);
  }

  static async connect(port: number, options: ConnectOptions = {}): Promise<SmtpTestClient> {
    const host = options.host ?? '127.0.0.1';
    const plain = net.connect({ port, host, localAddress: options.localAddress });
    if (options.preamble !== undefined) plain.write(options.preamble);
    const socket = options.tls ? tls.connect({ socket: plain, servername: 'localhost', rejectUnauthorized: false }) : plain;
    await new Promise<void>((resolve, reject) => {
      socket.once(options.tls ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    const client = new SmtpTestClient(socket, options.timeout ?? 10_000);
    client.greeting = await client.read().catch(() => undefined);
    return client;
  }

  get closed(): boolean {
    return this.ended;
  }

  /** Resolves when the server has closed the connection. */
  waitClosed(timeout = this.timeout): Promise<boolean> {
    return Promise.race([this.endedPromise.then(() => true), delay(timeout).then(() => false)]);
  }

  write(raw: string | Buffer): void {
    this.socket.write(raw);
  }

  /** The next reply; rejects after the timeout, resolves undefined when the connection closed first. */
  read(timeout = this.timeout): Promise<SmtpReply> {
    const ready = this.replies.shift();
    if (ready) return Promise.resolve(ready);
    if (this.ended) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no reply within ${timeout} ms (received so far: ${JSON.stringify(this.received.slice(-200))})`));
      }, timeout);
      const waiter = (r: SmtpReply | undefined) => {
        clearTimeout(timer);
        if (r) resolve(r);
        else reject(new Error('connection closed'));
      };
      this.waiters.push(waiter);
    });
  }

  /** Sends a command line and returns its reply. */
  async command(line: string): Promise<SmtpReply> {
    this.write(line + '\r\n');
    return this.read();
  }

  async ehlo(name = 'client.example.test'): Promise<SmtpReply> {
    return this.command(`EHLO ${name}`);
  }

  /** MAIL, RCPT for each recipient, DATA with the message if any recipient was taken. */
  async mail(options: MailOptions): Promise<MailResult> {
    const mail = await this.command(`MAIL FROM:<${options.from}>`);
    const rcpt: SmtpReply[] = [];
    if (mail.code !== 250) return { mail, rcpt, data: undefined };
    for (const to of typeof options.to === 'string' ? [options.to] : options.to) rcpt.push(await this.command(`RCPT TO:<${to}>`));
    if (!rcpt.some((r) => r.code === 250)) {
      await this.command('RSET');
      return { mail, rcpt, data: undefined };
    }
    const go = await this.command('DATA');
    if (go.code !== 354) return { mail, rcpt, data: go };
    this.write(toWire(options.data));
    return { mail, rcpt, data: await this.read() };
  }

  /** STARTTLS and the handshake; afterwards the session starts over (EHLO again). */
  async startTls(servername = 'localhost'): Promise<SmtpReply> {
    const reply = await this.command('STARTTLS');
    if (reply.code !== 220) return reply;
    await this.upgrade(servername);
    return reply;
  }

  /** Upgrades the socket without sending STARTTLS (for injection probes that sent it already). */
  async upgrade(servername = 'localhost'): Promise<void> {
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    plain.removeAllListeners('end');
    const secure = tls.connect({ socket: plain, servername, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.socket = secure;
    this.buffer = '';
    this.attach(secure);
  }

  async quit(): Promise<void> {
    if (this.ended) return;
    try {
      await this.command('QUIT');
    } catch {
      // the server may already be gone
    }
    this.close();
  }

  close(): void {
    this.socket.destroy();
  }

  private attach(socket: net.Socket): void {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('close', () => this.markEnded());
    socket.on('end', () => this.markEnded());
    socket.on('error', () => undefined);
  }

  private markEnded(): void {
    if (this.ended) return;
    this.ended = true;
    this.resolveEnded();
    for (const w of this.waiters.splice(0)) w(undefined);
  }

  private onData(chunk: string): void {
    this.received += chunk;
    this.buffer += chunk;
    let i: number;
    while ((i = this.buffer.indexOf('\r\n')) >= 0) {
      const line = this.buffer.slice(0, i);
      this.buffer = this.buffer.slice(i + 2);
      this.lines.push(line);
      if (/^\d{3}(?: |$)/.test(line)) this.complete();
    }
  }

  private complete(): void {
    const lines = this.lines.splice(0);
    const last = lines[lines.length - 1]!;
    const m = /^(\d{3})[ -]?(?:([245]\.\d{1,3}\.\d{1,3}) )?(.*)$/.exec(last)!;
    const reply: SmtpReply = { code: Number(m[1]), enhanced: m[2], text: m[3] ?? '', lines };
    const waiter = this.waiters.shift();
    if (waiter) waiter(reply);
    else this.replies.push(reply);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
