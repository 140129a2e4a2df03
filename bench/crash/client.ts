/**
 * The load of the crash rig: N clients, each in a loop — connect to the
 * server's current port, EHLO, send a few messages, QUIT — for as long as
 * the run lasts, across every kill and restart. Each message carries a
 * unique token in its Subject and first body line, goes to 1–3 of
 * user0..user9, and is filed by what the client saw:
 *
 * - acknowledged: the client read `250` after its final dot. The server
 *   promised it; it must be delivered to every accepted recipient.
 * - unacknowledged: the dot was written but no reply came (connection reset,
 *   closed, timed out). It may or may not be delivered; neither is a loss.
 * - aborted: the connection broke before the dot was written. The server
 *   never had the whole message, so it must never be delivered.
 * - rejected: a reply other than 250 (none is expected here).
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { prng } from '../common.js';

export type MessageStatus = 'acknowledged' | 'unacknowledged' | 'aborted' | 'rejected';

export interface SentMessage {
  readonly token: string;
  /** Recipients the server accepted (250 to RCPT). */
  readonly recipients: string[];
  /** sha256 (hex, 16 chars) of the body as it should be stored: LF line ends, dot-stuffing undone. */
  readonly bodyHash: string;
  status: MessageStatus;
  /** From "250 ... queued as ID". */
  queueId?: string;
  /** The reply, for rejected messages. */
  reply?: string;
}


export { prng };

export const DOMAIN = 'crash.test';
export const USERS = 10;
export const TOKEN_RE = /^Subject: crash-token (T\d+)$/m;

export function bodyHash(body: string): string {
  return createHash('sha256').update(body).digest('hex').slice(0, 16);
}

interface Reply {
  readonly code: number;
  readonly text: string;
}

class ConnectionLost extends Error {}

/** Just enough SMTP client: one command, one reply; any socket trouble is a ConnectionLost. */
class SmtpConnection {
  private buffer = '';
  private lines: string[] = [];
  private replies: Reply[] = [];
  private waiter: ((r: Reply | Error) => void) | undefined;
  private failure: Error | undefined;

  private constructor(
    private readonly socket: net.Socket,
    private readonly timeoutMs: number,
  ) {
    socket.setEncoding('latin1');
    socket.setNoDelay(true);
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new ConnectionLost(err.message)));
    socket.on('close', () => this.fail(new ConnectionLost('connection closed')));
  }

  static open(port: number, timeoutMs: number): Promise<SmtpConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new ConnectionLost('connect timed out'));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new SmtpConnection(socket, timeoutMs));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        socket.destroy();
        reject(new ConnectionLost(err.message));
      });
    });
  }

  read(): Promise<Reply> {
    const ready = this.replies.shift();
    if (ready) return Promise.resolve(ready);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        const err = new ConnectionLost(`no reply within ${this.timeoutMs} ms`);
        (err as ConnectionLost & { timeout?: boolean }).timeout = true;
        this.socket.destroy();
        reject(err);
      }, this.timeoutMs);
      this.waiter = (r) => {
        clearTimeout(timer);
        this.waiter = undefined;
        if (r instanceof Error) reject(r);
        else resolve(r);
      };
    });
  }

  write(data: string): void {
    if (this.failure) throw this.failure;
    this.socket.write(data);
  }

  async command(line: string): Promise<Reply> {
    this.write(line + '\r\n');
    return this.read();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.waiter?.(err);
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let i: number;
    while ((i = this.buffer.indexOf('\r\n')) >= 0) {
      const line = this.buffer.slice(0, i);
      this.buffer = this.buffer.slice(i + 2);
      this.lines.push(line);
      if (/^\d{3}(?: |$)/.test(line)) {
        this.lines = [];
        const reply = { code: Number(line.slice(0, 3)), text: line.slice(4) };
        if (this.waiter) this.waiter(reply);
        else this.replies.push(reply);
      }
    }
  }
}

/** Where the clients find the server: the current port, or a wait until there is one. */
export interface PortSource {
  /** The port of the server now accepting, waiting while none is; undefined once the load is told to stop. */
  port(): Promise<number | undefined>;
}

export interface LoadOptions {
  readonly clients: number;
  readonly seed: number;
  /** Milliseconds to wait for one reply before the connection counts as lost. */
  readonly replyTimeoutMs: number;
  /** Pause between messages on a connection, milliseconds (0: none). */
  readonly thinkMs: number;
  /** Recipients per message: 1 to this many, drawn uniformly (default 3; at most USERS). */
  readonly maxRecipients?: number;
}

export interface LoadCounts {
  connections: number;
  connectFailures: number;
  /** Replies that never came within replyTimeoutMs while the connection stayed open (a hung server). */
  replyTimeouts: number;
  /** Greetings other than 220. */
  refusedGreetings: number;
}

export class Load {
  readonly messages = new Map<string, SentMessage>();
  readonly counts: LoadCounts = { connections: 0, connectFailures: 0, replyTimeouts: 0, refusedGreetings: 0 };
  /** Messages between MAIL and the reply to their dot (or the connection's end). */
  inFlight = 0;
  /** Of those, the ones whose dot was written and whose reply has not come. */
  awaitingReply = 0;
  acknowledged = 0;
  private stopping = false;
  private seq = 0;
  private readonly open = new Set<SmtpConnection>();
  private workers: Array<Promise<void>> = [];

  constructor(
    private readonly source: PortSource,
    private readonly opts: LoadOptions,
  ) {}

  start(): void {
    for (let i = 0; i < this.opts.clients; i++) this.workers.push(this.worker(i));
  }

  /** No new messages; waits for the clients to finish the one in hand, then cuts what is left after timeoutMs. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.workers), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    for (const c of this.open) c.destroy();
    await Promise.all(this.workers);
  }

  private async worker(index: number): Promise<void> {
    const rand = prng((this.opts.seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
    while (!this.stopping) {
      const port = await this.source.port();
      if (port === undefined || this.stopping) break;
      let conn: SmtpConnection;
      try {
        conn = await SmtpConnection.open(port, this.opts.replyTimeoutMs);
      } catch {
        // The server is down or restarting: try again shortly, on whatever port it has then.
        this.counts.connectFailures++;
        await sleep(10 + rand() * 40);
        continue;
      }
      this.counts.connections++;
      this.open.add(conn);
      try {
        const greeting = await conn.read();
        if (greeting.code !== 220) {
          this.counts.refusedGreetings++;
          continue;
        }
        if ((await conn.command(`EHLO client${index}.${DOMAIN}`)).code !== 250) continue;
        const n = 1 + Math.floor(rand() * 5);
        for (let i = 0; i < n && !this.stopping; i++) {
          await this.sendOne(conn, index, rand);
          if (this.opts.thinkMs > 0) await sleep(rand() * 2 * this.opts.thinkMs);
        }
        await conn.command('QUIT').catch(() => undefined);
      } catch (err) {
        if (!(err instanceof ConnectionLost)) throw err;
        if ((err as ConnectionLost & { timeout?: boolean }).timeout) this.counts.replyTimeouts++;
      } finally {
        conn.destroy();
        this.open.delete(conn);
      }
    }
  }

  private async sendOne(conn: SmtpConnection, index: number, rand: () => number): Promise<void> {
    const token = `T${String(++this.seq).padStart(6, '0')}`;
    const wanted = new Set<number>();
    const count = 1 + Math.floor(rand() * Math.min(this.opts.maxRecipients ?? 3, USERS));
    while (wanted.size < count) wanted.add(Math.floor(rand() * USERS));
    const body = makeBody(token, rand);
    const msg: SentMessage = { token, recipients: [], bodyHash: bodyHash(body), status: 'aborted' };
    this.messages.set(token, msg);
    this.inFlight++;
    let dotWritten = false;
    try {
      const mail = await conn.command(`MAIL FROM:<load${index}@${DOMAIN}>`);
      if (mail.code !== 250) return reject(msg, mail);
      for (const u of wanted) {
        const to = `user${u}@${DOMAIN}`;
        const r = await conn.command(`RCPT TO:<${to}>`);
        if (r.code === 250) msg.recipients.push(to);
      }
      if (!msg.recipients.length) {
        await conn.command('RSET');
        return reject(msg, { code: 0, text: 'every RCPT refused' });
      }
      const go = await conn.command('DATA');
      if (go.code !== 354) return reject(msg, go);
      const headers = [
        `From: <load${index}@${DOMAIN}>`,
        `To: ${msg.recipients.map((r) => `<${r}>`).join(', ')}`,
        `Subject: crash-token ${token}`,
        `Message-ID: <${token}.${index}@client.${DOMAIN}>`,
        `Date: ${new Date().toUTCString()}`,
      ];
      conn.write(toWire(`${headers.join('\n')}\n\n${body}`));
      dotWritten = true;
      msg.status = 'unacknowledged';
      this.awaitingReply++;
      let reply: Reply;
      try {
        reply = await conn.read();
      } finally {
        this.awaitingReply--;
      }
      if (reply.code !== 250) return reject(msg, reply);
      msg.status = 'acknowledged';
      this.acknowledged++;
      const id = /queued as ([A-Za-z0-9]+)/.exec(reply.text);
      if (id) msg.queueId = id[1];
    } finally {
      this.inFlight--;
      if (!dotWritten && msg.status === 'aborted' && msg.recipients.length === 0) {
        // Broke before any recipient was taken: nothing the server could deliver, nothing to track.
        this.messages.delete(token);
      }
    }
  }
}

function reject(msg: SentMessage, reply: Reply): void {
  msg.status = 'rejected';
  msg.reply = `${reply.code} ${reply.text}`;
}

/**
 * A body of 2–60 lines of printable text: the token first, some lines
 * starting with a dot (dot-stuffing must be undone), ending with LF.
 */
function makeBody(token: string, rand: () => number): string {
  const lines = [`crash-token ${token} body`];
  const n = 1 + Math.floor(rand() * 60);
  for (let i = 0; i < n; i++) {
    let line = rand() < 0.05 ? '.' : '';
    const len = Math.floor(rand() * 76);
    for (let j = 0; j < len; j++) line += String.fromCharCode(32 + Math.floor(rand() * 95));
    lines.push(line.trimEnd());
  }
  return lines.join('\n') + '\n';
}

/** CRLF line ends, dot-stuffed, with the terminating dot. */
function toWire(text: string): string {
  const lines = text.replace(/\n$/, '').split('\n');
  return lines.map((l) => (l.startsWith('.') ? '.' + l : l)).join('\r\n') + '\r\n.\r\n';
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
