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
 * - PROXY protocol v1 only (useProxy), with its own reply to a bad header: the
 *   step it runs in, between accept and the implicit TLS handshake, is
 *   _handleProxy(), whose socket options (id, client and local address) reach
 *   the connection; _expectsProxyHeader() puts such a socket under smtp-server's
 *   pre-session guard (_pendingSockets, a timeout, maxClients). readPreamble()
 *   reads yubin's own PROXY v1/v2 there.
 */
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import type tls from 'node:tls';
import { SMTPServer, type SMTPServerError } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions, type TLSError } from 'smtp-server/lib/smtp-connection';
import { SMTPStream } from 'smtp-server/lib/smtp-stream';
import type { ClientEndpoints } from '../net/proxy-protocol.js';

export type { SMTPConnectionOptions };

/** The version this adapter was written against; package.json pins the same. */
export const SMTP_SERVER_VERSION = '3.21.6';

type MemberKind = 'function' | 'object' | 'boolean' | 'Map' | 'Set' | 'string';

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

/**
 * smtp-server's input parser with a look at every raw chunk of DATA, before
 * dot-unstuffing and before any of it reaches the message.
 */
export abstract class DataInspectingStream extends SMTPStream {
  constructor(maxCommandLength: number) {
    super({ maxCommandLength });
  }

  /** Sees each raw DATA chunk (it may run past the terminator); false keeps the chunk out of the message. */
  protected abstract inspectData(chunk: Buffer): boolean;

  /** Nothing more of the input is parsed: no message bytes, no commands. */
  protected stopInput(): void {
    this.isClosed = true;
  }

  // smtp-server re-enters _write with the rest of a chunk when DATA starts mid-chunk, so the look covers that too.
  override _write(chunk: Buffer, encoding: BufferEncoding | 'buffer', next: (err?: Error | null) => void): void {
    if (this._dataMode && !this.isClosed && !this.inspectData(chunk)) return next();
    super._write(chunk, encoding, next);
  }
}

/** The error smtp-server hands to _refuse(): onConnect's or onSecure's. */
export type RefusalError = SMTPServerError;

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

/** A connection id as smtp-server makes them in _handleProxy(): 80 random bits, 16 base-32 digits. */
function connectionId(): string {
  return BigInt('0x' + randomBytes(10).toString('hex')).toString(32).padStart(16, '0');
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

  // smtp-server's own reads its v1 header when _expectsProxyHeader() says so: it runs only for the other sockets.
  override _handleProxy(socket: net.Socket, callback: Parameters<SMTPServer['_handleProxy']>[1]): void {
    if (!this.expectsPreamble(socket)) return super._handleProxy(socket, callback);
    const options = { id: connectionId() };
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
