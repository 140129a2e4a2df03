/**
 * CHUNKING (RFC 3030): the BDAT command, one per connection.
 *
 * `BDAT <size> [LAST]` is followed by exactly <size> bytes of message, with
 * no dot-stuffing and no terminator; the message is the chunks of one
 * transaction end to end. The first chunk starts the message down the same
 * road as DATA (onData, the session's data and queue hooks), each chunk but
 * the last is answered at once, and the last gets the reply DATA's final dot
 * would. Whatever is wrong, the chunk's bytes are read (and dropped) so that
 * the input stays in step with the client, except after a BDAT whose size
 * cannot be read: nobody knows where the next command starts, so the
 * connection is closed.
 *
 * The replies follow Postfix ("250 2.0.0 Ok: 123 bytes") and RFC 3030
 * section 2: after a chunk is refused the transaction has failed, and the
 * chunks the client had already pipelined behind it are read, dropped and
 * refused the same way, until its BDAT LAST or a new envelope.
 */
import type { ChunkSink, FedMessage, SentReply } from './smtp-server-adapter.js';
import type { StrictSmtpStream } from './strict-stream.js';

/** What BDAT needs of the connection. */
export interface ChunkingWire {
  send(code: number, text: string): void;
  close(): void;
  /** The parser reading the socket now, if the connection is open. */
  readonly parser: StrictSmtpStream | undefined;
  /** MAIL and RCPT came: a message may start. */
  readonly envelope: 'no-mail' | 'no-rcpt' | 'ready';
  /** MAIL FROM said BODY=BINARYMIME. */
  readonly binary: boolean;
  /** The listener's maxMessageSize (SIZE). */
  readonly maxMessageSize: number;
  beginMessage(): FedMessage;
  answerMessage(message: FedMessage): SentReply;
  /** Ends a message without a reply (RSET): its stream errors with `reason`. */
  dropMessage(message: FedMessage, reason: string): void;
}

/** The largest chunk size taken; a longer number is a syntax error (no counting past 2^53). */
const SIZE = /^BDAT +(\d{1,15})( +LAST)? *$/i;

export const BDAT_SYNTAX = '5.5.4 Syntax: BDAT size [LAST], closing connection';

/** `BDAT <size> [LAST]`, or undefined when the line is not that. */
export function parseBdat(line: string): { size: number; last: boolean } | undefined {
  const m = SIZE.exec(line);
  return m ? { size: Number(m[1]), last: m[2] !== undefined } : undefined;
}

/** The open message: what it got so far, and whether it went over the size limit. */
interface Open {
  readonly message: FedMessage;
  received: number;
  oversized: boolean;
  /** A chunk is being read or answered: the client is waiting for us, not we for it. */
  busy: boolean;
}

const DISCARD: Pick<ChunkSink, 'write'> = { write: (_piece, done) => done() };

export class ChunkedTransfer {
  private open: Open | undefined;
  /** The transaction failed at a chunk: its reply, given again to the chunks that follow it. */
  private failed: SentReply | undefined;

  constructor(private readonly wire: ChunkingWire) {}

  /** A BDAT message is open: MAIL, RCPT and DATA are out of sequence. */
  get active(): boolean {
    return this.open !== undefined;
  }

  /** A BDAT message is open and the client owes the next chunk. */
  get awaitingClient(): boolean {
    return this.open !== undefined && !this.open.busy;
  }

  /** The BDAT command; callback() resumes the parser. */
  command(line: string, callback: () => void): void {
    const bdat = parseBdat(line.trim());
    if (!bdat) {
      this.wire.send(501, BDAT_SYNTAX);
      this.wire.close();
      return callback();
    }
    const { size, last } = bdat;
    if (this.open) return this.take(this.open, size, last, callback);
    const failed = this.failed;
    if (failed) {
      return this.discard(size, callback, (resume) => {
        if (last) this.failed = undefined;
        this.wire.send(failed.code, failed.text);
        resume();
      });
    }
    const envelope = this.wire.envelope;
    if (envelope !== 'ready') {
      const text = envelope === 'no-mail' ? '5.5.1 Error: need MAIL command' : '5.5.1 Error: need RCPT command';
      return this.discard(size, callback, (resume) => {
        this.wire.send(503, text);
        resume();
      });
    }
    const parser = this.wire.parser;
    if (!parser) return callback();
    parser.beginChunkedMessage(this.wire.binary);
    const open: Open = { message: this.wire.beginMessage(), received: 0, oversized: false, busy: false };
    this.open = open;
    this.take(open, size, last, callback);
  }

  /** A new envelope (RSET, HELO/EHLO, or the end of a message): a partial message is dropped. */
  reset(): void {
    this.failed = undefined;
    const open = this.open;
    if (!open) return;
    this.open = undefined;
    this.wire.parser?.endChunkedMessage(false);
    this.wire.dropMessage(open.message, 'message dropped by a reset before BDAT LAST');
  }

  private take(open: Open, size: number, last: boolean, callback: () => void): void {
    open.busy = true;
    // Past the limit the message is refused, but the chunk is read all the same.
    if (open.oversized || open.received + size > this.wire.maxMessageSize) {
      open.oversized = true;
      return this.discard(size, callback, (resume) => this.finish(open, resume, last));
    }
    const sink = { write: (piece: Buffer, done: () => void) => open.message.write(piece, done) };
    this.read(size, sink, true, callback, (resume) => {
      open.received += size;
      // onData answered before the end: the message was cut short, that answer ends the transaction.
      if (last || open.message.answered) return this.finish(open, resume, last);
      open.busy = false;
      this.wire.send(250, `2.0.0 Ok: ${size} bytes`);
      resume();
    });
  }

  /** The message is complete (LAST) or refused: onData's answer is this chunk's reply. */
  private finish(open: Open, resume: () => void, last: boolean): void {
    if (!this.wire.parser?.endChunkedMessage(last && !open.oversized)) return; // a bare CR at the very end: 451, closed
    open.message.end(open.oversized);
    open.message.whenAnswered(() => {
      if (this.open !== open) return; // dropped meanwhile: the connection is going away
      this.open = undefined;
      const reply = this.wire.answerMessage(open.message);
      if (!last && reply.code >= 400) this.failed = reply;
      resume();
    });
  }

  private discard(size: number, callback: () => void, end: (resume: () => void) => void): void {
    this.read(size, DISCARD, false, callback, end);
  }

  /** Reads `size` bytes into `sink`, then end(resume); a BDAT 0 ends at once. */
  private read(size: number, sink: Pick<ChunkSink, 'write'>, inspect: boolean, callback: () => void, end: (resume: () => void) => void): void {
    if (size === 0) return end(callback);
    const parser = this.wire.parser;
    if (!parser) return callback();
    parser.readChunk(size, { write: sink.write, end }, inspect);
    callback();
  }
}
