/**
 * Splits what a POP3 client sends into command lines. Lines end in CRLF or a
 * bare LF (old clients send either); the terminator is not part of the line.
 *
 * Input is held only up to a bound: a client that pipelines faster than it
 * reads answers is paused (`hasRoom` turns false), never buffered without
 * limit, and a line longer than the limit ends the reading at once instead of
 * growing a buffer until memory runs out.
 */

const LF = 0x0a;
const CR = 0x0d;

export type LineEvent =
  | { readonly kind: 'line'; readonly line: Buffer }
  /** A line over the limit arrived; nothing after it is read. */
  | { readonly kind: 'too-long' }
  /** The client closed its side (or the connection is gone). */
  | { readonly kind: 'end' };

const END: LineEvent = Object.freeze({ kind: 'end' });
const TOO_LONG: LineEvent = Object.freeze({ kind: 'too-long' });

export class LineReader {
  private readonly lines: Buffer[] = [];
  private queuedBytes = 0;
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private stop: LineEvent | undefined;
  private waiter: ((event: LineEvent) => void) | undefined;
  /** Pipelined input held before the socket is paused; a few lines' worth is all a client needs. */
  private readonly highWater: number;

  /** `maxLineLength` counts the terminator, as the listener limit does. */
  constructor(private readonly maxLineLength: number) {
    this.highWater = Math.max(64 * 1024, 4 * maxLineLength);
  }

  /** False when enough is buffered that the socket should stop reading for now. */
  /** No complete line is waiting to be read. */
  get drained(): boolean {
    return this.lines.length === 0;
  }

  get hasRoom(): boolean {
    return this.queuedBytes + this.partialBytes < this.highWater;
  }

  push(chunk: Buffer): void {
    if (this.stop) return;
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(LF, start);
      if (nl === -1) break;
      const piece = chunk.subarray(start, nl + 1);
      if (this.partialBytes + piece.length > this.maxLineLength) return this.tooLong();
      const whole = this.partialBytes > 0 ? Buffer.concat([...this.partial, piece]) : piece;
      this.partial = [];
      this.partialBytes = 0;
      const cut = whole.length >= 2 && whole[whole.length - 2] === CR ? 2 : 1;
      this.deliver(whole.subarray(0, whole.length - cut));
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.partial.push(chunk.subarray(start));
      this.partialBytes += chunk.length - start;
      // Even the shortest terminator would now take it past the limit.
      if (this.partialBytes >= this.maxLineLength) this.tooLong();
    }
  }

  /** No more input: what is queued is still handed out, then `end`. A partial last line is dropped. */
  end(): void {
    if (this.stop) return;
    this.stop = END;
    this.partial = [];
    this.partialBytes = 0;
    this.wake();
  }

  /** Drops everything buffered: after STLS, bytes that came in clear text must never run as commands. */
  discard(): void {
    this.lines.length = 0;
    this.queuedBytes = 0;
    this.partial = [];
    this.partialBytes = 0;
  }

  next(): Promise<LineEvent> {
    const line = this.lines.shift();
    if (line) {
      this.queuedBytes -= line.length;
      return Promise.resolve({ kind: 'line', line });
    }
    if (this.stop) return Promise.resolve(this.stop);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  private deliver(line: Buffer): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w({ kind: 'line', line });
      return;
    }
    this.lines.push(line);
    this.queuedBytes += line.length;
  }

  private tooLong(): void {
    this.stop = TOO_LONG;
    this.partial = [];
    this.partialBytes = 0;
    this.wake();
  }

  private wake(): void {
    if (!this.waiter || this.lines.length > 0) return;
    const w = this.waiter;
    this.waiter = undefined;
    w(this.stop!);
  }
}
