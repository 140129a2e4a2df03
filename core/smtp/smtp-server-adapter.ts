/**
 * The one place yubin reaches into smtp-server: every underscore member,
 * every overridden internal method, the internal event wiring and the deep
 * imports of lib/smtp-connection and lib/smtp-stream live here, behind hooks
 * named after what yubin needs. connection.ts, listener.ts and
 * strict-stream.ts use these hooks and smtp-server's public API only.
 *
 * smtp-server is pinned exactly (package.json), and
 * test/smtp-server-contract.test.ts fails, naming the member, when an upgrade
 * moves or changes anything listed in SMTP_SERVER_INTERNALS below.
 *
 * Hooks smtp-server lacks upstream, and so the internals they cost:
 * - No choice of connection class: SMTPServer.connect() is redone here, with
 *   the connection's internal 'error'/'connect' events wired to _onError and
 *   _onClientConnect as smtp-server does.
 * - No way to replace the input parser or see DATA before dot-unstuffing
 *   (smuggling protection): _createParser(), SMTPStream._write, _dataMode,
 *   isClosed, oncommand, and _parser to ask the current one.
 * - No greeting hook and a fixed 100 ms early-talker delay: init() redone,
 *   with smtp-server's socket wiring (_setListeners: _onCloseEvent, _onError,
 *   the idle timer, the pipe, upgrade() when needsUpgrade) done here so that
 *   it can be undone; _sendGreeting(); no hook for a refused greeting
 *   (onConnect/onSecure error carrying a full reply): _refuse().
 * - No way to hold an idle client with less than a whole connection
 *   (parking, see parking.ts): releaseSocket() takes a connection off its
 *   socket after the greeting (unpipe, _parser, _closed, server.connections),
 *   resumeParked() starts a new one on it ready for commands (_ready,
 *   clientHostname, session.servername, _resetSession()), timedOut() runs
 *   _onTimeout(), and adopt() wires a connection to the server as connect()
 *   does. A parked socket's own errors go to the server's _onError.
 * - No hook for a command that arrives before the greeting (smtp-server
 *   answers 421 itself): _onCommand() with _ready, _upgrading, _closing.
 * - No hook per command: HELO/EHLO (the helo hook, the EHLO keywords) and
 *   AUTH (per-listener offer) replace handler_HELO/EHLO/AUTH, which
 *   _getHandler() finds by the name 'handler_' + verb.
 * - No per-connection idle timeout: _armTimeout() and _onTimeout(), and the
 *   current socket (_socket, which STARTTLS replaces) to change it.
 * - No way to end a message in transfer from outside onData: _dataStream.
 * - No public RSET (HELO/EHLO is an implicit one): _resetSession().
 * - No per-session "is this command disabled": _isDisabled().
 * - No drop without a reply: _socket.destroy().
 * - No drain: close() gives busy sessions a fixed grace with its own reply,
 *   so yubin closes the net.Server itself and must end the sockets still in
 *   their TLS handshake: _pendingSockets.
 * - TLS handshake failures are told apart only by err.meta.stage.
 * - No CHUNKING (RFC 3030): handler_BDAT is added by that name; a chunk is
 *   read in a byte-count mode of the parser (readChunk(), entered as DATA
 *   enters data mode, through _dataMode, so that smtp-server's command loop
 *   hands the rest of the input to _write); the message goes to onData as
 *   DATA's does (beginMessage()) and is answered and ended as handler_DATA
 *   ends it (answerMessage(): _dataStream, _transactionCounter,
 *   _unrecognizedCommands, _resetSession()). BODY=BINARYMIME gets past
 *   _validateMailParams(); handler_DATA is wrapped to refuse DATA for it.
 *   Between two chunks the client owes the next command although a message
 *   is open, which smtp-server's _onTimeout() takes for "waiting for
 *   onData": the override tells them apart (_handlerPending). RSET and
 *   every other _resetSession() call drop a partial message.
 * - PROXY protocol v1 only (useProxy), with its own reply to a bad header: the
 *   step it runs in, between accept and the implicit TLS handshake, is
 *   _handleProxy(), whose socket options (id, client and local address) reach
 *   the connection; _expectsProxyHeader() puts such a socket under smtp-server's
 *   pre-session guard (_pendingSockets, a timeout, maxClients). readPreamble()
 *   reads yubin's own PROXY v1/v2 there.
 */
import { randomFillSync } from 'node:crypto';
import type net from 'node:net';
import type tls from 'node:tls';
import { PassThrough } from 'node:stream';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerError } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions, type TLSError } from 'smtp-server/lib/smtp-connection';
import { SMTPStream } from 'smtp-server/lib/smtp-stream';
import type { ClientEndpoints } from '../net/proxy-protocol.js';

export type { SMTPConnectionOptions };

/** The version this adapter was written against; package.json pins the same. */
export const SMTP_SERVER_VERSION = '3.21.6';

type MemberKind = 'function' | 'object' | 'boolean' | 'Map' | 'Set' | 'string' | 'number';

/** A member the adapter uses: its kind, and for a method the arity it is called or overridden with. */
export interface InternalMember {
  readonly kind: MemberKind;
  readonly arity?: number;
}

/**
 * Everything of smtp-server's that this module relies on beyond its documented
 * API, as found on a real server, connection and parser. The contract test
 * checks each one; a new use of an internal goes in this list.
 */
export const SMTP_SERVER_INTERNALS = {
  server: {
    connect: { kind: 'function', arity: 2 },
    _onError: { kind: 'function', arity: 1 },
    _onClientConnect: { kind: 'function', arity: 1 },
    _pendingSockets: { kind: 'Map' },
    connections: { kind: 'Set' },
    _expectsProxyHeader: { kind: 'function', arity: 1 },
    _handleProxy: { kind: 'function', arity: 2 }, // (socket, callback(err, socketOptions))
  },
  connection: {
    init: { kind: 'function', arity: 0 },
    connectionReady: { kind: 'function', arity: 1 },
    _onCloseEvent: { kind: 'function', arity: 1 },
    _onError: { kind: 'function', arity: 1 },
    upgrade: { kind: 'function', arity: 2 },
    needsUpgrade: { kind: 'boolean' },
    clientHostname: { kind: 'string' }, // '' once connectionReady() ran with reverse lookup off
    _sendGreeting: { kind: 'function', arity: 0 },
    _refuse: { kind: 'function', arity: 2 },
    _onCommand: { kind: 'function', arity: 2 },
    _createParser: { kind: 'function', arity: 0 },
    _armTimeout: { kind: 'function', arity: 0 }, // (socket = this._socket)
    _onTimeout: { kind: 'function', arity: 0 },
    _resetSession: { kind: 'function', arity: 0 },
    _isDisabled: { kind: 'function', arity: 1 },
    _getHandler: { kind: 'function', arity: 1 },
    handler_HELO: { kind: 'function', arity: 2 },
    handler_EHLO: { kind: 'function', arity: 2 },
    handler_AUTH: { kind: 'function', arity: 2 },
    handler_DATA: { kind: 'function', arity: 2 },
    _validateMailParams: { kind: 'function', arity: 1 },
    _handlerPending: { kind: 'boolean' },
    _transactionCounter: { kind: 'number' },
    _unrecognizedCommands: { kind: 'number' },
    _server: { kind: 'object' },
    _socket: { kind: 'object' },
    _parser: { kind: 'object' },
    _dataStream: { kind: 'boolean' }, // false until DATA, then the onData stream
    _ready: { kind: 'boolean' },
    _upgrading: { kind: 'boolean' },
    _closing: { kind: 'boolean' },
    _closed: { kind: 'boolean' },
  },
  stream: {
    _write: { kind: 'function', arity: 3 },
    oncommand: { kind: 'function', arity: 2 },
    _dataMode: { kind: 'boolean' },
    isClosed: { kind: 'boolean' },
    _remainder: { kind: 'string' }, // a partial command line held for the next chunk
  },
} as const satisfies Record<'server' | 'connection' | 'stream', Record<string, InternalMember>>;

/** Where the bytes of a BDAT chunk go. */
export interface ChunkSink {
  /** A piece of the chunk; done() when the next may come (the message stream's back-pressure). */
  write(piece: Buffer, done: () => void): void;
  /** The chunk is in; commands are parsed again once resume() is called (after the chunk's reply). */
  end(resume: () => void): void;
}

/**
 * smtp-server's input parser with a look at every raw chunk of DATA, before
 * dot-unstuffing and before any of it reaches the message, and a byte-count
 * mode for BDAT chunks.
 */
export abstract class DataInspectingStream extends SMTPStream {
  /** The BDAT chunk being read: bytes still to come, where they go, whether they are inspected. */
  private chunk: { remaining: number; sink: ChunkSink; inspect: boolean } | undefined;

  constructor(maxCommandLength: number) {
    super({ maxCommandLength });
  }

  /** Sees each raw DATA chunk (it may run past the terminator); false keeps the chunk out of the message. */
  protected abstract inspectData(chunk: Buffer): boolean;

  /** Sees each piece of a BDAT chunk that goes into a message; false keeps it out (and input has been stopped). */
  protected abstract inspectChunk(piece: Buffer): boolean;

  /** Nothing more of the input is parsed: no message bytes, no commands. */
  protected stopInput(): void {
    this.isClosed = true;
  }

  /**
   * The next `size` bytes (size > 0) are a BDAT chunk, not commands: they go
   * to `sink`, the rest of the input waits for sink.end()'s resume. Called
   * from a command handler, before its callback: smtp-server's command loop
   * sees _dataMode and hands the rest of the input to _write, as for DATA.
   */
  readChunk(size: number, sink: ChunkSink, inspect: boolean): void {
    this.chunk = { remaining: size, sink, inspect };
    this._dataMode = true;
  }

  // smtp-server re-enters _write with the rest of a chunk when DATA starts mid-chunk, so the look covers that too.
  override _write(chunk: Buffer, encoding: BufferEncoding | 'buffer', next: (err?: Error | null) => void): void {
    if (this.chunk) return this.writeChunk(chunk, next);
    if (this._dataMode && !this.isClosed && !this.inspectData(chunk)) return next();
    super._write(chunk, encoding, next);
  }

  /** Exact byte counts: no dot-stuffing, no terminator; what follows the chunk is commands again. */
  private writeChunk(input: Buffer, next: (err?: Error | null) => void): void {
    const chunk = this.chunk!;
    if (this.isClosed) return next();
    const take = Math.min(chunk.remaining, input.length);
    const piece = input.subarray(0, take);
    const rest = input.subarray(take);
    chunk.remaining -= take;
    if (take > 0 && chunk.inspect && !this.inspectChunk(piece)) return next();
    const written = () => {
      if (chunk.remaining > 0) return next();
      this.chunk = undefined;
      this._dataMode = false;
      // On a later turn: a run of small chunks pipelined in one read must not grow the stack.
      chunk.sink.end(() => setImmediate(() => this._write(rest, 'buffer', next)));
    };
    if (take > 0) chunk.sink.write(piece, written);
    else written();
  }
}

/** The error smtp-server hands to _refuse(): onConnect's or onSecure's. */
export type RefusalError = SMTPServerError;

/** The reply a message got, as sent. */
export interface SentReply {
  readonly code: number;
  readonly text: string;
}

type OnDataError = Error & { responseCode?: number };

/**
 * A message that reaches onData other than by DATA (BDAT chunks): the stream
 * onData gets, fed by the chunks, and onData's answer once it came.
 */
export class FedMessage {
  /** What onData reads, the same kind of stream DATA gives it. */
  readonly stream: SMTPServerDataStream;
  private answer: { err: OnDataError | null | undefined; message: unknown } | undefined;
  private waiting: (() => void) | undefined;

  constructor() {
    this.stream = Object.assign(new PassThrough(), { byteLength: 0, sizeExceeded: false });
  }

  /** Adds a piece to the message; done() when the reader can take more. */
  write(piece: Buffer, done: () => void): void {
    const stream = this.stream;
    if (!stream.writable) return done();
    stream.byteLength += piece.length;
    if (stream.write(piece) || stream.destroyed) return done();
    // A stream destroyed while full never drains, it only closes.
    const go = () => {
      stream.off('drain', go);
      stream.off('close', go);
      done();
    };
    stream.once('drain', go);
    stream.once('close', go);
  }

  /** The last chunk is in; `oversized` marks it as smtp-server marks a DATA message over the size option. */
  end(oversized: boolean): void {
    if (oversized) this.stream.sizeExceeded = true;
    if (this.stream.writable) this.stream.end();
  }

  /** onData has answered (early only when the message was cut short). */
  get answered(): boolean {
    return this.answer !== undefined;
  }

  /** Runs `then` once onData has answered. */
  whenAnswered(then: () => void): void {
    if (this.answer) then();
    else this.waiting = then;
  }

  /** onData's callback. */
  settle(err: OnDataError | null | undefined, message: unknown): void {
    this.answer = { err, message };
    // A handler that answered without reading would leave the rest of the chunks nowhere to go (handler_DATA drains too).
    if (this.stream.readableFlowing === null) this.stream.resume();
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.();
  }

  /** onData's answer, as handler_DATA words it for SMTP. */
  reply(): SentReply {
    const { err, message } = this.answer!;
    if (err) return { code: err.responseCode || 450, text: err.message };
    return { code: 250, text: typeof message === 'string' ? message : 'OK: message queued' };
  }
}

/** smtp-server's connection, with yubin's hooks in place of its internals. */
export abstract class AdaptedConnection<S extends SMTPServer = SMTPServer> extends SMTPConnection {
  /** The server that made this connection. */
  protected get server(): S {
    return this._server as S;
  }

  /** The socket the client talks on now (the TLS one after STARTTLS). */
  protected get socket(): net.Socket {
    return this._socket;
  }

  /** The parser reading the socket now (a new one after STARTTLS), if the connection is open. */
  protected get parser(): DataInspectingStream | undefined {
    const parser = this._parser;
    return parser instanceof DataInspectingStream ? parser : undefined;
  }

  // ---- greeting ----

  /** smtp-server's init() waits 100 ms before the greeting; this one calls socketReady() as soon as it can. */
  override init(): void {
    this.attach();
    if (this.needsUpgrade) this.upgrade(() => false, () => this.socketReady());
    else this.socketReady();
  }

  // smtp-server's listeners, kept by reference so that releaseSocket() can take these (and only these) off.
  private readonly onSocketClose = (hadError: boolean) => this._onCloseEvent(hadError);
  private readonly onSocketError = (err: Error) => this._onError(err);

  /** smtp-server's _setListeners() without its callback: close and error handlers, the idle timer, the parser. */
  private attach(): void {
    const socket = this._socket;
    socket.on('close', this.onSocketClose);
    socket.on('error', this.onSocketError);
    this._armTimeout();
    if (this._parser) socket.pipe(this._parser);
  }

  /** The socket is set up (TLS done on an implicit listener): check capacity, then proceedToGreeting(). */
  protected abstract socketReady(): void;

  /** Runs onConnect, then sendGreeting() or refuse(). */
  protected proceedToGreeting(): void {
    this.connectionReady();
  }

  /** Sends the 220 line (after onConnect accepted). */
  protected abstract sendGreeting(): void;

  override _sendGreeting(): void {
    this.sendGreeting();
  }

  /** onConnect or onSecure refused; `standard` is smtp-server's answer (the error's text, then close). */
  protected refuse(_err: RefusalError, standard: () => void): void {
    standard();
  }

  // As before this module, smtp-server's own refusal goes out without the context it passed.
  override _refuse(err: RefusalError): void {
    this.refuse(err, () => super._refuse(err));
  }

  // ---- commands ----

  /** A command before the greeting went out; the hook answers and closes. */
  protected abstract earlyTalker(command: Buffer): void;

  override _onCommand(command: Buffer, callback?: () => void): void {
    if (!this._ready && !this._upgrading) {
      if (!this._closing) this.earlyTalker(command);
      return callback?.();
    }
    if (this._ready && !this._upgrading && !this._closing) {
      const refusal = this.outOfSequence(command.toString('latin1').split(' ', 1)[0]!.toUpperCase());
      if (refusal) {
        this.send(503, refusal);
        return callback?.();
      }
    }
    super._onCommand(command, callback);
  }

  /** HELO and EHLO, in place of smtp-server's handlers; callback() resumes the parser. */
  protected abstract greet(verb: 'HELO' | 'EHLO', command: Buffer, callback: () => void): void;

  override handler_HELO(command: Buffer, callback: () => void): void {
    this.greet('HELO', command, callback);
  }

  override handler_EHLO(command: Buffer, callback: () => void): void {
    this.greet('EHLO', command, callback);
  }

  /** AUTH: `proceed` runs smtp-server's SASL exchange, which ends in onAuth. */
  protected authCommand(_command: Buffer, _callback: () => void, proceed: () => void): void {
    proceed();
  }

  override handler_AUTH(command: Buffer, callback: () => void): void {
    this.authCommand(command, callback, () => super.handler_AUTH(command, callback));
  }

  /** A fresh envelope, as RSET gives. */
  protected resetTransaction(): void {
    this._resetSession();
  }

  /** The envelope was reset (RSET, HELO/EHLO, STARTTLS, the end of a message): a partial BDAT message is dropped. */
  protected transactionReset(): void {}

  override _resetSession(): void {
    super._resetSession();
    this.transactionReset();
  }

  /**
   * A command refused in the connection's state (MAIL, RCPT or DATA while a
   * BDAT message is open): the 503 text, or undefined to go on.
   */
  protected outOfSequence(_verb: string): string | undefined {
    return undefined;
  }

  // ---- CHUNKING ----

  /** BDAT, which smtp-server does not have; callback() resumes the parser. */
  protected abstract chunkCommand(command: Buffer, callback: () => void): void;

  handler_BDAT(command: Buffer, callback: () => void): void {
    this.chunkCommand(command, callback);
  }

  /** DATA: `proceed` runs smtp-server's handler_DATA. */
  protected dataCommand(_command: Buffer, _callback: () => void, proceed: () => void): void {
    proceed();
  }

  override handler_DATA(command: Buffer, callback: () => void): void {
    this.dataCommand(command, callback, () => super.handler_DATA(command, callback));
  }

  /** MAIL FROM's BODY values taken beyond smtp-server's 7BIT and 8BITMIME (upper case). */
  protected extraBodyTypes(): readonly string[] {
    return [];
  }

  // smtp-server refuses any BODY but 7BIT and 8BITMIME; an extra one is checked without it and then applied as smtp-server applies BODY.
  override _validateMailParams(parsed: Parameters<SMTPConnection['_validateMailParams']>[0]): ReturnType<SMTPConnection['_validateMailParams']> {
    const body = parsed.args ? parsed.args.BODY : undefined;
    if (typeof body !== 'string' || !this.extraBodyTypes().includes(body.toUpperCase())) return super._validateMailParams(parsed);
    const { BODY: _body, ...rest } = parsed.args as Record<string, string | true>;
    return super._validateMailParams({ ...parsed, args: rest });
  }

  /** The client's BODY for this transaction, upper case: 7BIT, 8BITMIME or an extra one. */
  protected get bodyType(): string {
    return (this.session.envelope.bodyType ?? '7bit').toUpperCase();
  }

  /** The envelope has a sender and at least one recipient: a message may start. */
  protected get envelopeReady(): 'no-mail' | 'no-rcpt' | 'ready' {
    const envelope = this.session.envelope;
    if (!envelope.mailFrom) return 'no-mail';
    return envelope.rcptTo.length > 0 ? 'ready' : 'no-rcpt';
  }

  /**
   * Starts a message that arrives in BDAT chunks: onData gets its stream as it
   * gets DATA's, and it counts as the message in transfer (abortMessage(),
   * the connection closing) until answerMessage().
   */
  protected beginMessage(): FedMessage {
    const message = new FedMessage();
    this._dataStream = message.stream;
    this._server.onData(message.stream, this.session, (err, reply) => message.settle(err, reply));
    return message;
  }

  /** Sends onData's answer as handler_DATA sends it after the final dot, and ends the transaction as it does. */
  protected answerMessage(message: FedMessage): SentReply {
    const reply = message.reply();
    if (this._dataStream === message.stream) this._dataStream = false;
    if (reply.code === 250) this.send(250, reply.text, 'DATA_OK');
    else this.send(reply.code, reply.text);
    this._transactionCounter++;
    this._unrecognizedCommands = 0;
    this._resetSession();
    return reply;
  }

  /** Ends a BDAT message without a reply (RSET): its stream errors with `err`, and it is no longer in transfer. */
  protected abandonMessage(message: FedMessage, err: Error): void {
    if (!message.stream.destroyed) message.stream.destroy(err);
    if (this._dataStream === message.stream) this._dataStream = false;
  }

  /** Between two BDAT chunks: the client owes the next command, although a message is open. */
  protected awaitingChunk(): boolean {
    return false;
  }

  // smtp-server waits without limit while a message is open and its parser is not in data mode (onData deciding);
  // between BDAT chunks it is the client that is silent, and the idle timeout applies.
  override _onTimeout(): void {
    if (this.awaitingChunk() && !this._handlerPending && !this._closing) {
      this.send(421, 'Timeout - closing connection');
      return;
    }
    super._onTimeout();
  }

  /** The command is disabled for this session (disabledCommands). */
  protected isDisabled(verb: string): boolean {
    return this._isDisabled(verb);
  }

  // ---- parser ----

  /** A parser for the socket; smtp-server makes a new one for the TLS session after STARTTLS. */
  protected abstract createParser(): DataInspectingStream;

  /** The parser failed (a command line over the limit). */
  protected abstract parserError(err: Error): void;

  override _createParser(): SMTPStream {
    const parser = this.createParser();
    parser.oncommand = (command: Buffer, callback?: () => void) => this._onCommand(command, callback);
    parser.on('error', (err: Error) => this.parserError(err));
    return parser;
  }

  // ---- timeouts, the message in transfer, the socket ----

  /** The idle timeout smtp-server arms: at the start, again after STARTTLS and after it fired. */
  protected abstract idleTimeout(): number;

  override _armTimeout(socket: net.Socket = this._socket): void {
    socket.setTimeout(this.idleTimeout(), () => this._onTimeout());
  }

  /** Ends the message in transfer, if there is one: the onData stream errors with `err`. */
  protected abortMessage(err: Error): void {
    const stream = this._dataStream;
    if (stream && !stream.destroyed) stream.destroy(err);
  }

  /** Destroys the socket without a word. */
  protected destroySocket(): void {
    this._socket.destroy();
  }

  /** The idle timeout ran out: smtp-server's answer (421, unless a handler is pending). */
  protected timedOut(): void {
    this._onTimeout();
  }

  // ---- parking ----

  /**
   * Takes this connection off its socket, if it is waiting for the client with
   * nothing read: greeted, no partial line, nothing buffered, no TLS upgrade.
   * The socket is left paused, with none of this connection's listeners and no
   * idle timer, and this object is done with (it is out of server.connections
   * and never runs again). Returns the socket, or undefined to stay as it is.
   */
  protected releaseSocket(): net.Socket | undefined {
    const socket = this._socket;
    const parser = this._parser;
    if (!parser || !this._ready || this._upgrading || this._closing || this._closed || this.needsUpgrade) return undefined;
    // A message in transfer (DATA, or BDAT between its chunks) is not idle, whatever the socket shows.
    if (this._dataStream || parser._dataMode) return undefined;
    if (parser._remainder || parser.writableLength > 0 || socket.readableLength > 0 || socket.destroyed || !socket.readable) return undefined;
    socket.unpipe(parser);
    socket.pause();
    parser.isClosed = true;
    this._parser = false;
    socket.removeListener('close', this.onSocketClose);
    socket.removeListener('error', this.onSocketError);
    // Only the idle timer's listeners are on 'timeout' (_armTimeout).
    socket.removeAllListeners('timeout');
    socket.setTimeout(0);
    this._closed = true;
    this._server.connections.delete(this);
    return socket;
  }

  /**
   * Starts this (new) connection on a socket another connection greeted and
   * released: ready for commands at once, as the one before was. Bytes put
   * back on the socket (unshift) are read first.
   */
  protected resumeParked(clientHostname: string | false): void {
    this._ready = true;
    this.clientHostname = clientHostname;
    if (this.secure) this.session.servername = (this._socket as tls.TLSSocket).servername;
    this._resetSession();
    this.attach();
  }
}

/** Random bytes drawn 4 KiB at a time: one randomBytes call per connection cost about 24 µs here. */
const idPool = Buffer.alloc(4096);
let idPoolOffset = idPool.length;

/** A connection id as smtp-server makes them in _handleProxy(): 80 random bits, 16 base-32 digits. */
function connectionId(): string {
  if (idPoolOffset + 10 > idPool.length) {
    randomFillSync(idPool);
    idPoolOffset = 0;
  }
  const at = idPoolOffset;
  idPoolOffset += 10;
  // Two 40-bit halves, 8 base-32 digits each.
  return idPool.readUIntBE(at, 5).toString(32).padStart(8, '0') + idPool.readUIntBE(at + 5, 5).toString(32).padStart(8, '0');
}

/** How long a socket refused before its session (with a reply) stays open for the reply to go out. */
const PREAMBLE_REPLY_LINGER_MS = 1_000;

/** An SMTPServer whose connections come from createConnection(). */
export abstract class AdaptedServer extends SMTPServer {
  protected abstract createConnection(socket: net.Socket | tls.TLSSocket, options?: SMTPConnectionOptions | null): SMTPConnection;

  // smtp-server's connect(), with yubin's connection class.
  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    const connection = this.createConnection(socket, socketOptions);
    this.adopt(connection);
    connection.init();
  }

  /** Counts the connection and wires its events to the server, as connect() does. */
  protected adopt(connection: SMTPConnection): void {
    this.connections.add(connection);
    connection.on('error', (err: Error) => this._onError(err));
    connection.on('connect', (data: Parameters<SMTPServer['_onClientConnect']>[0]) => this._onClientConnect(data));
  }

  /** An error on a socket no connection holds (a parked one): reported as a connection's would be. */
  protected socketError(err: Error & { remoteAddress?: string }, remoteAddress: string): void {
    err.remoteAddress = remoteAddress;
    this._onError(err);
  }

  // ---- before the session: the PROXY header ----

  /**
   * This socket starts with a preamble (the PROXY header) to read before the
   * session and before any TLS. smtp-server then keeps it among its pending
   * sockets until the session starts: drain ends it, maxClients counts it.
   */
  protected expectsPreamble(_socket: net.Socket): boolean {
    return false;
  }

  /**
   * Reads the preamble: the client's endpoints, or undefined to keep the
   * socket's own. A rejection drops the socket with no greeting; a socket the
   * implementation ended (with a reply) gets a moment to send it.
   */
  protected readPreamble(_socket: net.Socket): Promise<ClientEndpoints | undefined> {
    return Promise.resolve(undefined);
  }

  override _expectsProxyHeader(socket: net.Socket): boolean {
    return this.expectsPreamble(socket);
  }

  // Replaces smtp-server's whole _handleProxy: yubin reads the PROXY header itself (never useProxy) and
  // sets no ignoredHosts, so the rest of it would only draw the id with a randomBytes call per connection.
  override _handleProxy(socket: net.Socket, callback: Parameters<SMTPServer['_handleProxy']>[1]): void {
    const options = { id: connectionId() };
    if (!this.expectsPreamble(socket)) {
      setImmediate(() => callback(null, options));
      return;
    }
    this.readPreamble(socket).then(
      (client) => {
        if (!client) return callback(null, options);
        callback(null, { ...options, remoteAddress: client.remoteIp, remotePort: client.remotePort, localAddress: client.localIp, localPort: client.localPort });
      },
      (failure: Error) => {
        // A late error on a socket being closed must not go unhandled.
        socket.on('error', () => undefined);
        if (socket.writableEnded) setTimeout(() => socket.destroy(), PREAMBLE_REPLY_LINGER_MS).unref();
        else socket.destroy();
        callback(failure);
      },
    );
  }

  /** Destroys sockets still before their session (PROXY header or implicit TLS handshake): they have none to finish. */
  destroyPendingSockets(): void {
    this._pendingSockets.forEach((socket) => socket.destroy());
  }
}

/** A client error from the implicit TLS handshake, before any session. */
export function isTlsHandshakeError(err: Error): boolean {
  return (err as TLSError).meta?.stage === 'connect';
}
