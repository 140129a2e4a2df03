/**
 * A stored message as POP3 sends it. Maildir files have LF line ends (qmail
 * stores them so); the wire wants CRLF, a `.` doubled at the start of a line,
 * and a last line that ends before the terminating `.` line.
 *
 * The size a client is told (LIST, STAT, `+OK n octets`) is what RETR sends
 * between its `+OK` line and the final `.` line, without the dot-stuffing:
 * the file's size plus one octet for every bare LF, plus a CRLF when the file
 * does not end with a line end. `WireSizeCounter` and `WireEncoder` apply the
 * same rules, so the two can never disagree.
 */

const LF = 0x0a;
const CR = 0x0d;
const DOT = 0x2e;
const CRLF = Buffer.from('\r\n');
const DOT_BUF = Buffer.from('.');
const TERMINATOR = Buffer.from('.\r\n');

/** Counts the wire size of a file read in chunks. */
export class WireSizeCounter {
  private total = 0;
  private last = -1;

  add(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.total += chunk.length;
    let i = chunk.indexOf(LF);
    while (i !== -1) {
      const before = i > 0 ? chunk[i - 1] : this.last;
      if (before !== CR) this.total++;
      i = chunk.indexOf(LF, i + 1);
    }
    this.last = chunk[chunk.length - 1]!;
  }

  get size(): number {
    return this.last === -1 || this.last === LF ? this.total : this.total + 2;
  }
}

/** The most octets `encodeInto` can write for `n` octets of message: every byte an LF that needs a CR, plus the closing lines. */
export function encodedMax(n: number): number {
  return n * 2 + 5;
}

/**
 * A whole message in wire form, terminator included, written into `out` at
 * `o` (which must have `encodedMax(data.length)` octets of room); returns
 * where it ended. One pass: LF becomes CRLF (a CRLF stays), a `.` at the
 * start of a line is doubled, a last line without a line end gets one.
 * Lines are found with indexOf and copied whole with TypedArray.set (a
 * third faster than a byte loop on typical mail; Buffer.copy's argument
 * checks cost more than the copy of a line), no strings anywhere.
 */
export function encodeInto(data: Buffer, out: Buffer, o: number): number {
  const n = data.length;
  // Lines are cut from a plain Uint8Array view: Buffer's own subarray is several times slower.
  const bytes = new Uint8Array(data.buffer, data.byteOffset, n);
  let pos = 0;
  while (pos < n) {
    if (bytes[pos] === DOT) out[o++] = DOT;
    const nl = data.indexOf(LF, pos);
    if (nl === -1) {
      // The last line lacks its line end: it gets one before the terminator.
      out.set(bytes.subarray(pos, n), o);
      o += n - pos;
      out[o++] = CR;
      out[o++] = LF;
      break;
    }
    if (nl > pos && bytes[nl - 1] === CR) {
      out.set(bytes.subarray(pos, nl + 1), o);
      o += nl + 1 - pos;
    } else {
      out.set(bytes.subarray(pos, nl), o);
      o += nl - pos;
      out[o++] = CR;
      out[o++] = LF;
    }
    pos = nl + 1;
  }
  out[o++] = DOT;
  out[o++] = CR;
  out[o++] = LF;
  return o;
}

/** `head` (the `+OK` line) and the message in wire form in one new buffer (see encodeInto). */
export function encodeWhole(data: Buffer, head: Buffer): Buffer {
  const out = Buffer.allocUnsafe(head.length + encodedMax(data.length));
  return out.subarray(0, encodeInto(data, out, head.copy(out, 0)));
}

/**
 * Turns a stored message into wire form chunk by chunk, without holding it
 * whole. With `bodyLines` (TOP), stops after the header, the blank line and
 * that many body lines.
 */
export class WireEncoder {
  private last = -1;
  private atLineStart = true;
  /** Octets of the current line so far, terminator excluded (except a CR that may yet be one). */
  private lineLength = 0;
  private inHeader = true;
  private bodySent = 0;
  private stopped = false;

  constructor(private readonly bodyLines?: number) {}

  /** TOP has sent all it was asked for: the rest of the file need not be read. */
  get done(): boolean {
    return this.stopped;
  }

  encode(chunk: Buffer): Buffer {
    const parts: Buffer[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      if (this.atLineStart) {
        if (this.bodyLines !== undefined && !this.inHeader && this.bodySent >= this.bodyLines) {
          this.stopped = true;
          break;
        }
        if (chunk[pos] === DOT) parts.push(DOT_BUF);
        this.atLineStart = false;
      }
      const nl = chunk.indexOf(LF, pos);
      if (nl === -1) {
        parts.push(chunk.subarray(pos));
        this.lineLength += chunk.length - pos;
        this.last = chunk[chunk.length - 1]!;
        break;
      }
      const crlf = (nl > pos ? chunk[nl - 1] : this.last) === CR;
      if (crlf) {
        parts.push(chunk.subarray(pos, nl + 1));
      } else {
        parts.push(chunk.subarray(pos, nl), CRLF);
      }
      const content = this.lineLength + (nl - pos) - (crlf ? 1 : 0);
      if (this.inHeader) {
        if (content === 0) this.inHeader = false;
      } else {
        this.bodySent++;
      }
      this.lineLength = 0;
      this.last = LF;
      this.atLineStart = true;
      pos = nl + 1;
    }
    if (this.bodyLines !== undefined && this.atLineStart && !this.inHeader && this.bodySent >= this.bodyLines) this.stopped = true;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** What follows the content: a line end if the file lacked one, then the `.` line. */
  finish(): Buffer {
    return this.last === -1 || this.last === LF ? TERMINATOR : Buffer.concat([CRLF, TERMINATOR]);
  }
}
