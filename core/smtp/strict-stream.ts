/**
 * smtp-server's input parser, made strict about DATA the way qmail-smtpd is.
 *
 * smtp-server ends DATA only on CRLF.CRLF (good) but passes a bare LF or a
 * bare CR into the message, and a server behind it or a client reading the
 * spool later may take such a line end for a real one: the SMTP smuggling
 * attacks of 2023. qmail's answer is the right one: any LF not preceded by
 * CR, any CR not followed by LF (and NUL, which no 8BITMIME text may hold)
 * ends the session with 451 before the message can be queued. The check runs
 * on the raw bytes, before smtp-server removes dot-stuffing, and stops at the
 * real terminator so that pipelined commands after it (which may end in a
 * bare LF, RFC 5321 tolerates that for commands) are not judged as data.
 *
 * BDAT chunks (RFC 3030) carry exact byte counts, so nothing in them can end
 * the message or start a command: CRLF.CRLF inside a chunk is content. The
 * line rules still hold for a 7BIT or 8BITMIME body sent that way (the queue,
 * local delivery and a DATA-only server onward see the same bytes); only
 * BODY=BINARYMIME content is binary and left unchecked. A CR that ends one
 * chunk is judged with the first byte of the next.
 */
import { DataInspectingStream } from './smtp-server-adapter.js';

export type DataViolation = 'bare LF' | 'bare CR' | 'NUL';

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const NUL = 0x00;

/** Where the scanner is within the current line. */
const enum Pos {
  LineStart,
  Dot, // a line that so far is just "."
  Inside,
}

export interface StrictStreamOptions {
  maxCommandLength: number;
  /** Longest DATA line, CRLF included; longer ones set `lineTooLong` and are kept. */
  maxLineLength: number;
  onViolation(kind: DataViolation): void;
}

export class StrictSmtpStream extends DataInspectingStream {
  /** A line of the current message went over maxLineLength. */
  lineTooLong = false;
  private scanning = false;
  /** Scanning BDAT chunks: no terminator, the message ends with its last chunk. */
  private chunked = false;
  /** The BDAT message is BODY=BINARYMIME: not scanned at all. */
  private binary = false;
  private pos = Pos.LineStart;
  private pendingCR = false;
  private lineLength = 0;
  private readonly maxLineLength: number;
  private readonly onViolation: (kind: DataViolation) => void;

  constructor(options: StrictStreamOptions) {
    super(options.maxCommandLength);
    this.maxLineLength = options.maxLineLength;
    this.onViolation = options.onViolation;
  }

  protected override inspectData(chunk: Buffer): boolean {
    if (!this.scanning) this.startScan();
    return this.judge(this.scan(chunk));
  }

  protected override inspectChunk(piece: Buffer): boolean {
    if (this.binary) return true;
    return this.judge(this.scan(piece));
  }

  /** A message in BDAT chunks starts: its content is scanned across the chunks, binary content not at all. */
  beginChunkedMessage(binary: boolean): void {
    this.startScan();
    this.chunked = true;
    this.binary = binary;
  }

  /**
   * The chunked message ended; with `complete` (its last chunk came) a CR
   * left at its very end is a bare CR. Returns false on a violation (reported,
   * input stopped).
   */
  endChunkedMessage(complete: boolean): boolean {
    const danglingCR = complete && this.pendingCR && !this.binary;
    this.scanning = false;
    this.chunked = false;
    this.binary = false;
    return this.judge(danglingCR ? 'bare CR' : undefined);
  }

  private judge(violation: DataViolation | undefined): boolean {
    if (!violation) return true;
    // Nothing of this chunk reaches the message: the connection is going away.
    this.stopInput();
    this.onViolation(violation);
    return false;
  }

  private startScan(): void {
    this.scanning = true;
    this.chunked = false;
    this.binary = false;
    this.pos = Pos.LineStart;
    this.pendingCR = false;
    this.lineLength = 0;
    this.lineTooLong = false;
  }

  /** Scans message bytes up to the terminator; returns the first violation found. */
  private scan(chunk: Buffer): DataViolation | undefined {
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (this.pendingCR) {
        if (b !== LF) return 'bare CR';
        this.pendingCR = false;
        if (this.pos === Pos.Dot && !this.chunked) {
          // CRLF "." CRLF: the end of the message. What follows is commands again.
          this.scanning = false;
          return undefined;
        }
        this.pos = Pos.LineStart;
        this.lineLength = 0;
        continue;
      }
      if (b === CR) {
        this.pendingCR = true;
      } else if (b === LF) {
        return 'bare LF';
      } else if (b === NUL) {
        return 'NUL';
      } else {
        this.pos = this.pos === Pos.LineStart && b === DOT ? Pos.Dot : Pos.Inside;
      }
      // CRLF counts towards the line, as RFC 5321's 1000-octet text line limit does.
      if (++this.lineLength > this.maxLineLength - 1) this.lineTooLong = true;
    }
    return undefined;
  }
}
