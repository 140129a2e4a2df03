/**
 * The TRANSACTION state (RFC 1939 section 5) over one locked Maildir, and the
 * UPDATE that QUIT makes of it. Marks live in memory until QUIT: a client
 * that disconnects or times out changes nothing, as with qmail-pop3d.
 */
import type { MaildirBox, Pop3Message, UpdateResult } from './maildir-box.js';
import { encodedMax, encodeInto, WireEncoder } from './wire-format.js';
import type { Wire } from './wire.js';

const READ_CHUNK = 64 * 1024;
const MIN_READ = 4 * 1024;
/** Messages up to this wire size are read and sent whole; bigger ones are streamed. */
const WHOLE_MAX = 1024 * 1024;

/**
 * Replies to RETR are encoded into shared slabs, one after the other, and
 * the socket is handed views of them: one allocation per 256 KB of replies
 * instead of one per message. A region, once handed out, is never written
 * again; a slab that is full is left to the socket and the garbage
 * collector. A reply bigger than a slab gets a buffer of its own.
 */
const SLAB_SIZE = 256 * 1024;
let slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
let slabUsed = 0;

/** Room for `max` octets: the buffer and where to start writing. Call `used` with the end once written. */
function reserve(max: number): { buf: Buffer; at: number } {
  if (max > SLAB_SIZE / 4) return { buf: Buffer.allocUnsafeSlow(max), at: 0 };
  if (slabUsed + max > SLAB_SIZE) {
    slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
    slabUsed = 0;
  }
  return { buf: slab, at: slabUsed };
}

function used(buf: Buffer, end: number): void {
  // 8-aligned, so the next reply's copies start on a word boundary.
  if (buf === slab) slabUsed = (end + 7) & ~7;
}

export const TRANSACTION_COMMANDS = new Set(['STAT', 'LIST', 'UIDL', 'TOP', 'RETR', 'DELE', 'RSET', 'NOOP', 'LAST']);

export interface QuitSummary extends UpdateResult {
  readonly retrieved: number;
  /** Messages left in the mailbox. */
  readonly left: number;
}

export class Pop3Transaction {
  /** Highest message number read or deleted (the old LAST command, RFC 1460). */
  private last = 0;

  constructor(
    private readonly box: MaildirBox,
    private readonly wire: Wire,
  ) {}

  /** Runs one TRANSACTION command (one of TRANSACTION_COMMANDS) and writes its reply. */
  async run(verb: string, args: readonly string[]): Promise<void> {
    switch (verb) {
      case 'STAT': {
        if (args.length) return this.say('-ERR syntax error');
        const { count, octets } = this.box.stat();
        return this.say(`+OK ${count} ${octets}`);
      }
      case 'LIST':
        return this.listing(args, (m) => String(m.size));
      case 'UIDL':
        return this.listing(args, (m) => m.uid);
      case 'RETR':
        if (args.length !== 1) return this.say('-ERR syntax error');
        return this.retrieve(args[0]!, undefined);
      case 'TOP':
        if (args.length !== 2 || !/^\d+$/.test(args[1]!)) return this.say('-ERR syntax error');
        return this.retrieve(args[0]!, Number(args[1]));
      case 'DELE': {
        if (args.length !== 1) return this.say('-ERR syntax error');
        const m = await this.pick(args[0]!);
        if (!m) return;
        m.deleted = true;
        this.last = Math.max(this.last, m.number);
        return this.say(`+OK message ${m.number} deleted`);
      }
      case 'RSET': {
        if (args.length) return this.say('-ERR syntax error');
        for (const m of this.box.messages) m.deleted = false;
        this.last = 0;
        const { count, octets } = this.box.stat();
        return this.say(`+OK maildrop has ${count} messages (${octets} octets)`);
      }
      case 'NOOP':
        return this.say('+OK');
      case 'LAST':
        return this.say(`+OK ${this.last}`);
      default:
        return this.say('-ERR unknown command');
    }
  }

  /** UPDATE: applies the deletions and the seen marks. */
  async quit(): Promise<QuitSummary> {
    const retrieved = this.box.messages.filter((m) => m.retrieved).length;
    const result = await this.box.update();
    return { ...result, retrieved, left: this.box.messages.length - result.deleted };
  }

  private async listing(args: readonly string[], value: (m: Pop3Message) => string): Promise<void> {
    if (args.length > 1) return this.say('-ERR syntax error');
    if (args.length === 1) {
      const m = await this.pick(args[0]!);
      if (m) await this.say(`+OK ${m.number} ${value(m)}`);
      return;
    }
    const { count, octets } = this.box.stat();
    const lines = [`+OK ${count} messages (${octets} octets)`];
    for (const m of this.box.messages) if (!m.deleted) lines.push(`${m.number} ${value(m)}`);
    lines.push('.', '');
    await this.wire.write(lines.join('\r\n'));
  }

  /** RETR (bodyLines undefined) or TOP: streams the file in wire form, as fast as the client reads. */
  private async retrieve(arg: string, bodyLines: number | undefined): Promise<void> {
    const m = await this.pick(arg);
    if (!m) return;
    if (bodyLines === undefined && m.size <= WHOLE_MAX) return this.retrieveWhole(m);
    const handle = await this.box.openMessage(m);
    if (!handle) return this.say('-ERR [SYS/TEMP] message is gone');
    let complete = false;
    try {
      const encoder = new WireEncoder(bodyLines);
      // The status line goes out with the first chunk: a small message is one write.
      let head: Buffer | undefined = Buffer.from(bodyLines === undefined ? `+OK ${m.size} octets\r\n` : '+OK top of message follows\r\n');
      const chunkSize = Math.min(READ_CHUNK, Math.max(MIN_READ, m.size + 1));
      while (!encoder.done && !this.wire.closed) {
        const buf = Buffer.allocUnsafe(chunkSize); // not reused: the socket may still hold the last one
        const { bytesRead } = await handle.read(buf, 0, chunkSize, null);
        if (bytesRead === 0) break;
        const out = encoder.encode(buf.subarray(0, bytesRead));
        await this.wire.write(head ? Buffer.concat([head, out]) : out);
        head = undefined;
      }
      await this.wire.write(head ? Buffer.concat([head, encoder.finish()]) : encoder.finish());
      complete = !this.wire.closed;
    } finally {
      await handle.close();
    }
    if (complete && bodyLines === undefined) {
      m.retrieved = true;
      this.last = Math.max(this.last, m.number);
    }
  }

  /** RETR of a message small enough to read and send in one piece (nearly all of them). */
  private async retrieveWhole(m: Pop3Message): Promise<void> {
    let sent = this.sendWhole(m);
    if (sent === 'gone' && (await this.box.relocate(m))) sent = this.sendWhole(m);
    if (sent === 'gone') return this.say('-ERR [SYS/TEMP] message is gone');
    await sent;
    if (this.wire.closed) return;
    m.retrieved = true;
    this.last = Math.max(this.last, m.number);
  }

  /**
   * Reads, encodes and writes in one synchronous step: the read buffer is
   * shared by every session (see MaildirBox.readShared).
   */
  private sendWhole(m: Pop3Message): Promise<void> | 'gone' {
    const data = this.box.readShared(m);
    if (data === 'gone') return 'gone';
    const head = `+OK ${m.size} octets\r\n`;
    const { buf, at } = reserve(head.length + encodedMax(data.length));
    const end = encodeInto(data, buf, at + buf.write(head, at, 'latin1'));
    used(buf, end);
    return this.wire.write(buf.subarray(at, end));
  }

  /** The message an argument names, or undefined after writing why there is none. */
  private async pick(arg: string): Promise<Pop3Message | undefined> {
    if (!/^\d+$/.test(arg)) {
      await this.say('-ERR syntax error');
      return undefined;
    }
    const n = Number(arg);
    const m = n >= 1 ? this.box.get(n) : undefined;
    if (!m) {
      await this.say('-ERR no such message');
      return undefined;
    }
    if (m.deleted) {
      await this.say(`-ERR message ${n} already deleted`);
      return undefined;
    }
    return m;
  }

  private say(line: string): Promise<void> {
    return this.wire.write(`${line}\r\n`);
  }
}
