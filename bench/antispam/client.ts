/**
 * A small SMTP client over raw sockets for the anti-spam benchmark: one
 * connection from a chosen 127.0.0.x source address (localAddress), no
 * pipelining, every command a round trip, as smtp-source does.
 */
import net from 'node:net';

export interface Reply {
  readonly code: number;
  readonly lines: string[];
}

/** Reads SMTP replies (multi-line ones whole) from a socket, one await at a time. */
export class ReplyReader {
  private buf = '';
  private lines: string[] = [];
  private readonly ready: Reply[] = [];
  private waiter: { resolve: (r: Reply) => void; reject: (e: Error) => void } | undefined;
  private failed: Error | undefined;

  constructor(private readonly sock: net.Socket) {
    sock.setEncoding('latin1');
    sock.on('data', (s: string) => this.onData(s));
    sock.on('error', (err) => this.fail(err));
    sock.on('close', () => this.fail(new Error('connection closed')));
  }

  private onData(s: string): void {
    this.buf += s;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).replace(/\r$/, '');
      this.buf = this.buf.slice(nl + 1);
      this.lines.push(line);
      if (line.length < 4 || line[3] === ' ') {
        const reply = { code: Number(line.slice(0, 3)), lines: this.lines };
        this.lines = [];
        if (this.waiter) {
          const w = this.waiter;
          this.waiter = undefined;
          w.resolve(reply);
        } else this.ready.push(reply);
      }
    }
  }

  private fail(err: Error): void {
    this.failed ??= err;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.reject(err);
    }
  }

  next(): Promise<Reply> {
    const r = this.ready.shift();
    if (r) return Promise.resolve(r);
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  async command(line: string): Promise<Reply> {
    this.sock.write(line + '\r\n');
    return this.next();
  }
}

export function connect(port: number, localAddress: string, timeoutMs = 30_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port, localAddress });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`connect from ${localAddress} timed out`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.setNoDelay(true);
      resolve(sock);
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

export interface TransactionOptions {
  readonly port: number;
  readonly localAddress: string;
  readonly helo: string;
  readonly from: string;
  readonly to: string;
  /** Send the message (DATA) when RCPT is accepted; otherwise QUIT after the RCPT reply. */
  readonly data?: string;
}

export interface TransactionResult {
  /** From the connect call to the RCPT reply (connect, greeting, EHLO, MAIL, RCPT), ms. */
  readonly rcptMs: number;
  readonly rcptCode: number;
  readonly rcptText: string;
  /** The message was taken (250 after the final dot). */
  readonly accepted: boolean;
}

/** One connection: greeting, EHLO, MAIL, RCPT (timed), then DATA or QUIT. */
export async function transaction(o: TransactionOptions): Promise<TransactionResult> {
  const t0 = performance.now();
  const sock = await connect(o.port, o.localAddress);
  const r = new ReplyReader(sock);
  try {
    const greeting = await r.next();
    if (greeting.code !== 220) throw new Error(`greeting ${greeting.lines.join(' | ')}`);
    const ehlo = await r.command(`EHLO ${o.helo}`);
    if (ehlo.code !== 250) throw new Error(`EHLO: ${ehlo.lines.join(' | ')}`);
    const mail = await r.command(`MAIL FROM:<${o.from}>`);
    if (mail.code !== 250) throw new Error(`MAIL: ${mail.lines.join(' | ')}`);
    const rcpt = await r.command(`RCPT TO:<${o.to}>`);
    const rcptMs = performance.now() - t0;
    let accepted = false;
    if (rcpt.code === 250 && o.data !== undefined) {
      const d = await r.command('DATA');
      if (d.code !== 354) throw new Error(`DATA: ${d.lines.join(' | ')}`);
      const end = await r.command(o.data + '\r\n.');
      if (end.code !== 250) throw new Error(`end of data: ${end.lines.join(' | ')}`);
      accepted = true;
    }
    await r.command('QUIT').catch(() => undefined);
    return { rcptMs, rcptCode: rcpt.code, rcptText: rcpt.lines.join(' | '), accepted };
  } finally {
    sock.destroy();
  }
}

/** Connects, reads the greeting, says EHLO and leaves the connection open and idle. */
export async function idleSession(port: number, localAddress: string, helo: string): Promise<net.Socket> {
  const sock = await connect(port, localAddress);
  const r = new ReplyReader(sock);
  try {
    const greeting = await r.next();
    if (greeting.code !== 220) throw new Error(`greeting ${greeting.lines.join(' | ')}`);
    const ehlo = await r.command(`EHLO ${helo}`);
    if (ehlo.code !== 250) throw new Error(`EHLO: ${ehlo.lines.join(' | ')}`);
    return sock;
  } catch (err) {
    sock.destroy();
    throw err;
  }
}

/** A small message (headers + body, CRLF line ends), about `bytes` long. */
export function smallMessage(from: string, to: string, bytes: number): string {
  const head = [`From: <${from}>`, `To: <${to}>`, 'Subject: antispam bench', 'Message-ID: <bench@client.bench.test>', '', ''].join('\r\n');
  const lines: string[] = [];
  let n = head.length;
  while (n < bytes) {
    const l = 'x'.repeat(Math.min(76, Math.max(1, bytes - n - 2)));
    lines.push(l);
    n += l.length + 2;
  }
  return head + lines.join('\r\n');
}
