/**
 * The message while it arrives: its header section (the only part held in
 * memory, and only up to a limit), its hop count, and the headers plugins add.
 */
import { Readable } from 'node:stream';
import type { Header, Message } from '../hooks.js';
import { concatStreams, type SpoolFile } from '../queue/spool.js';

const END_OF_HEADERS = Buffer.from('\r\n\r\n');

export class HeaderCollector {
  done = false;
  tooLarge = false;
  // A CRLF in front makes "no header section" (a message starting with a blank line) the same search.
  private chunks: Buffer[] = [Buffer.from('\r\n')];
  private length = 2;
  /** The last bytes seen, so a terminator split across chunks is found without joining them all. */
  private tail: Buffer = this.chunks[0]!;
  private block: Buffer | undefined;

  constructor(private readonly maxBytes: number) {}

  push(chunk: Buffer): void {
    if (this.done) return;
    const window = Buffer.concat([this.tail, chunk]);
    const windowStart = this.length - this.tail.length;
    this.chunks.push(chunk);
    this.length += chunk.length;
    const hit = window.indexOf(END_OF_HEADERS);
    if (hit >= 0) {
      const end = windowStart + hit;
      if (end > this.maxBytes) this.tooLarge = true;
      this.finish(Buffer.concat(this.chunks, this.length).subarray(2, end + 2));
    } else if (this.length - 2 > this.maxBytes) {
      this.tooLarge = true;
      const all = Buffer.concat(this.chunks, this.length);
      this.finish(all.subarray(2, Math.max(2, all.lastIndexOf('\r\n') + 2)));
    } else {
      this.tail = window.subarray(-3);
    }
  }

  /** The message ended inside the header section (a message that is all headers). */
  end(): void {
    if (!this.done) this.finish(Buffer.concat(this.chunks).subarray(2));
  }

  headers(): Header[] {
    return parseHeaders(this.block ?? Buffer.alloc(0));
  }

  private finish(block: Buffer): void {
    this.done = true;
    this.block = block;
    this.chunks = [];
  }
}

/** Unfolds and splits a header section; lines that are not `name: value` are skipped. */
export function parseHeaders(block: Buffer): Header[] {
  const out: Header[] = [];
  let current: { name: string; value: string } | undefined;
  for (const line of block.toString('utf8').split('\r\n')) {
    if (line === '') continue;
    if ((line[0] === ' ' || line[0] === '\t') && current) {
      current.value += ' ' + line.trim();
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0 || !/^[\x21-\x39\x3b-\x7e]+$/.test(line.slice(0, colon))) {
      current = undefined;
      continue;
    }
    current = { name: line.slice(0, colon), value: line.slice(colon + 1).trim() };
    out.push(current);
  }
  return out;
}

/** `TLS-Required: No` (RFC 8689 5): the sender asks that TLS policies not stop this message. */
export function tlsRequiredNo(headers: readonly Header[]): boolean {
  return headers.some((h) => h.name.toLowerCase() === 'tls-required' && h.value.trim().toLowerCase() === 'no');
}

/** Trace headers counted as hops, as qmail-smtpd counts them. */
export function hopCount(headers: readonly Header[]): number {
  return headers.filter((h) => /^(received|delivered-to)$/i.test(h.name)).length;
}

export class ReceivedMessage implements Message {
  private added: string[] = [];

  constructor(
    readonly size: number,
    readonly headers: readonly Header[],
    private readonly file: SpoolFile,
  ) {}

  header(name: string): string[] {
    const n = name.toLowerCase();
    return this.headers.filter((h) => h.name.toLowerCase() === n).map((h) => h.value);
  }

  addHeader(name: string, value: string): void {
    if (!/^[\x21-\x39\x3b-\x7e]+$/.test(name)) throw new Error(`invalid header name ${JSON.stringify(name)}`);
    // Folded values are allowed; a bare line break would end the header early.
    if (/\r(?!\n[ \t])|(?<!\r)\n|\r\n(?![ \t])/.test(value)) throw new Error(`header ${name} has a line break that is not a fold`);
    this.added.push(`${name}: ${value}\r\n`);
  }

  /** Headers plugins added, in the order added; they go on top of the message. */
  get prependHeaders(): string {
    return this.added.join('');
  }

  stream(): Readable {
    return concatStreams([Readable.from([Buffer.from(this.prependHeaders)]), this.file.read()]);
  }
}
