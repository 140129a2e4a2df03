/**
 * A small POP3 load client over a raw socket (node:net), built for counting
 * octets fast rather than for handing messages around.
 *
 * Multi-line responses are scanned in place: the only search is for "\n."
 * (a line that starts with a dot: either dot-stuffing or the terminator), so
 * a 10 KB message costs one or two Buffer.indexOf calls. The octet count of a
 * response is what the server sent between the status line and the
 * terminating ".\r\n", less one byte per stuffed dot: the message as the
 * server sized it in LIST (CRLF line ends). Bodies are kept only when asked
 * for (UIDL, LIST, sampled RETRs).
 */
import net from 'node:net';

export interface Pop3Response {
  readonly ok: boolean;
  /** The status line, without its CRLF. */
  readonly status: string;
  /** Multi-line responses: content octets (dot-stuffing undone, terminator excluded). */
  readonly octets: number;
  /** Multi-line responses asked to be collected: the content, dot-stuffing undone. */
  readonly body?: Buffer;
}

interface Pending {
  readonly command: string;
  readonly multi: boolean;
  readonly collect: boolean;
  readonly resolve: (r: Pop3Response) => void;
  readonly reject: (e: Error) => void;
}

const LF = 10;
const CR = 13;
const DOT = 46;
const NL_DOT = Buffer.from('\n.');

export class Pop3Error extends Error {
  constructor(
    message: string,
    readonly command: string,
    readonly reply: string,
  ) {
    super(message);
  }
}

/** Last status lines, for error reports: what was sent and what came back. */
const TRANSCRIPT_MAX = 12;

export class Pop3Client {
  private readonly pending: Pending[] = [];
  private carry: Buffer | undefined;
  private inBody = false;
  private atLineStart = true;
  private octets = 0;
  private chunks: Buffer[] = [];
  private status = '';
  private closed: Error | undefined;
  private readonly transcript: string[] = [];

  private constructor(private readonly sock: net.Socket) {
    sock.setNoDelay(true);
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    const fail = (err: Error) => {
      if (this.closed) return;
      this.closed = err;
      for (const p of this.pending.splice(0)) p.reject(new Pop3Error(`${err.message} (waiting for the reply to ${p.command})`, p.command, ''));
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('connection closed by the server')));
  }

  /** Connects and reads the greeting (which must be +OK). */
  static connect(port: number, host = '127.0.0.1'): Promise<{ client: Pop3Client; greeting: string }> {
    const sock = net.connect({ host, port });
    const client = new Pop3Client(sock);
    // The greeting is a single-line response to no command; a refused connection rejects it.
    return client.expect('(greeting)', false, false).then((r) => {
      if (!r.ok) {
        client.destroy();
        throw new Pop3Error(`greeting was ${JSON.stringify(r.status)}`, '(greeting)', r.status);
      }
      return { client, greeting: r.status };
    });
  }

  private expect(command: string, multi: boolean, collect: boolean): Promise<Pop3Response> {
    if (this.closed) return Promise.reject(new Pop3Error(`${this.closed.message} (before ${command})`, command, ''));
    return new Promise((resolve, reject) => this.pending.push({ command, multi, collect, resolve, reject }));
  }

  /** Sends one command and waits for its reply (multi: a multi-line reply on +OK). */
  command(line: string, multi = false, collect = false): Promise<Pop3Response> {
    this.note(`C: ${line.startsWith('PASS ') ? 'PASS ********' : line}`);
    const p = this.expect(line, multi, collect);
    this.sock.write(line + '\r\n');
    return p;
  }

  /** Like command() but fails on -ERR, naming the command and the reply. */
  async ok(line: string, multi = false, collect = false): Promise<Pop3Response> {
    const r = await this.command(line, multi, collect);
    if (!r.ok) throw new Pop3Error(`${line.startsWith('PASS ') ? 'PASS ********' : line} -> ${r.status}`, line, r.status);
    return r;
  }

  /**
   * Pipelined commands: keeps up to `window` outstanding, writing the next
   * ones as replies come back (one write per batch). Calls onReply for each
   * reply in order. Resolves when all are answered.
   */
  pipeline(commands: (i: number) => string, count: number, window: number, multi: boolean, collect: (i: number) => boolean, onReply: (i: number, r: Pop3Response) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      let sent = 0;
      let done = 0;
      let failed = false;
      const fill = () => {
        let batch = '';
        const promises: Array<[number, Promise<Pop3Response>]> = [];
        while (sent < count && sent - done < window) {
          const i = sent++;
          const line = commands(i);
          batch += line + '\r\n';
          promises.push([i, this.expect(line, multi, collect(i))]);
        }
        if (batch) this.sock.write(batch);
        for (const [i, p] of promises) {
          p.then(
            (r) => {
              if (failed) return;
              try {
                onReply(i, r);
              } catch (err) {
                failed = true;
                reject(err as Error);
                return;
              }
              done++;
              if (done === count) resolve();
              else if (sent < count && sent - done >= window / 2) return;
              else fill();
            },
            (err: Error) => {
              if (!failed) {
                failed = true;
                reject(err);
              }
            },
          );
        }
      };
      if (count === 0) resolve();
      else fill();
    });
  }

  /** The last commands and status lines exchanged. */
  lastExchanges(): string[] {
    return [...this.transcript];
  }

  private note(s: string): void {
    this.transcript.push(s);
    if (this.transcript.length > TRANSCRIPT_MAX) this.transcript.shift();
  }

  destroy(): void {
    this.sock.destroy();
  }

  /** Waits for the server to close the connection (after QUIT), at most ms. */
  waitClosed(ms: number): Promise<boolean> {
    if (this.sock.destroyed || this.sock.readableEnded) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      this.sock.once('close', () => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  private finish(r: Pop3Response): void {
    const p = this.pending.shift()!;
    p.resolve(r);
  }

  private onData(chunk: Buffer): void {
    let buf = chunk;
    if (this.carry) {
      buf = Buffer.concat([this.carry, chunk]);
      this.carry = undefined;
    }
    const n = buf.length;
    let p = 0;
    while (p < n) {
      const exp = this.pending[0];
      if (!exp) {
        this.note(`S: (unexpected) ${buf.toString('latin1', p, Math.min(n, p + 200)).trimEnd()}`);
        this.closed ??= new Error(`unexpected data from the server: ${JSON.stringify(buf.toString('latin1', p, Math.min(n, p + 200)))}`);
        this.sock.destroy();
        return;
      }
      if (!this.inBody) {
        const nl = buf.indexOf(LF, p);
        if (nl < 0) {
          this.carry = buf.subarray(p);
          return;
        }
        const status = buf.toString('latin1', p, nl > p && buf[nl - 1] === CR ? nl - 1 : nl);
        p = nl + 1;
        const ok = status.startsWith('+OK');
        this.note(`S: ${status.length > 200 ? status.slice(0, 200) + '...' : status}`);
        if (ok && exp.multi) {
          this.inBody = true;
          this.atLineStart = true;
          this.octets = 0;
          this.chunks = [];
          this.status = status;
          continue;
        }
        this.finish({ ok: status.startsWith('+'), status, octets: 0 });
        continue;
      }
      // In a multi-line body.
      if (this.atLineStart) {
        if (buf[p] === DOT) {
          if (n - p < 3) {
            this.carry = buf.subarray(p);
            return;
          }
          if (buf[p + 1] === CR && buf[p + 2] === LF) {
            p += 3;
            this.inBody = false;
            const body = exp.collect ? Buffer.concat(this.chunks) : undefined;
            this.chunks = [];
            this.finish({ ok: true, status: this.status, octets: this.octets, ...(body ? { body } : {}) });
            continue;
          }
          p += 1; // a stuffed dot: not content
        }
        this.atLineStart = false;
      }
      const k = buf.indexOf(NL_DOT, p);
      const end = k < 0 ? n : k + 1;
      this.octets += end - p;
      if (exp.collect) this.chunks.push(buf.subarray(p, end));
      this.atLineStart = k >= 0 || buf[n - 1] === LF;
      p = end;
    }
  }
}
