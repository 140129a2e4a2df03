/**
 * smtp-server's connection, extended where yubin needs the wire to behave
 * differently: HELO/EHLO answered by the helo hook, strict DATA line ends,
 * AUTH only where the listener offers it, plugin reply texts, silent drops,
 * and BDAT (chunking.ts), which smtp-server lacks. Everything that is policy lives in SmtpSession; this file only adapts,
 * through the hooks of smtp-server-adapter.ts and smtp-server's public API.
 */
import type net from 'node:net';
import type tls from 'node:tls';
import type { SMTPServer } from 'smtp-server';
import { AdaptedConnection, type FedMessage, type RefusalError, type SentReply, type SMTPConnectionOptions } from './smtp-server-adapter.js';
import { ChunkedTransfer, type ChunkingWire } from './chunking.js';
import type { Reply } from '../answers.js';
import type { TimeLimits } from '../hooks.js';
import { ConnectionTimeLimits, type TimeLimitTarget } from '../time-limits.js';
import { formatReply } from '../answers.js';
import type { Outcome, SmtpSession, WireState } from './session.js';
import { StrictSmtpStream, type DataViolation } from './strict-stream.js';
import { MIN_PARKED_IDLE_MS, type Parked } from './parking.js';

const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;

/** What the connection needs from the server that made it. */
export interface SessionFactory {
  createSession(connection: YubinConnection): SmtpSession;
  readonly maxLineLength: number;
  /** The idle timeout until HELO/EHLO. */
  readonly firstCommandTimeout: number;
  /** Connections parked now: they count towards maxClients like those in server.connections. */
  readonly parkedCount: number;
  /** A connection that has nothing to do until its client speaks: park it (see parking.ts). */
  parkIdle(connection: YubinConnection): void;
}

/** What a connection carries over from the one that parked its socket. */
interface Carried {
  readonly session: SmtpSession;
  readonly timeLimits: ConnectionTimeLimits;
}

/**
 * A parked socket's record: its session, its time limits and the wire facts
 * that cannot change while nothing is said. It is the session's wire until
 * the client speaks (or anything else happens), when unpark() makes a whole
 * connection on the socket again.
 */
export class ParkedConnection implements Parked, WireState, TimeLimitTarget {
  deadline: number;
  private readonly since = Date.now();
  readonly remoteIp: string;
  readonly remotePort: number;
  readonly localIp: string;
  readonly localPort: number;
  readonly secure: boolean;

  constructor(
    readonly socket: net.Socket,
    readonly id: string,
    from: YubinConnection,
    readonly session: SmtpSession,
    readonly timeLimits: ConnectionTimeLimits,
    readonly clientHostname: string | false,
    private readonly unpark: (parked: ParkedConnection) => YubinConnection,
  ) {
    this.remoteIp = from.remoteIp;
    this.remotePort = from.remotePort;
    this.localIp = from.localIp;
    this.localPort = from.localPort;
    this.secure = from.secure;
    this.deadline = this.since + timeLimits.idle;
  }

  get heloName(): undefined {
    return undefined;
  }
  get authUser(): undefined {
    return undefined;
  }
  get esmtp(): boolean {
    return false;
  }

  limitTime(limits: TimeLimits): void {
    this.timeLimits.lower(limits);
  }

  // Nothing was said since the greeting, so the idle time counts from when it was parked.
  idle(ms: number): void {
    this.deadline = this.since + ms;
  }

  expired(totalMs: number): void {
    this.unpark(this).connectionExpired(totalMs);
  }

  abortData(): void {
    // No message is in transfer on a parked connection.
  }

  dismiss(text: string): void {
    this.unpark(this).send(421, text);
  }

  drop(): void {
    this.socket.destroy();
  }
}

/** Commands refused between the first BDAT of a message and its LAST. */
const CLOSED_DURING_BDAT = new Set(['MAIL', 'RCPT', 'DATA', 'STARTTLS', 'AUTH']);

/** Domain name or address literal, printable ASCII: what a HELO argument may be. */
const HELO_ARGUMENT = /^(?:[a-z0-9_](?:[a-z0-9_.-]{0,253})|\[(?:\d{1,3}(?:\.\d{1,3}){3}|IPv6:[0-9a-f:.]+)\])$/i;

export class YubinConnection extends AdaptedConnection<SMTPServer & SessionFactory> implements WireState {
  readonly yubin: SmtpSession;
  /** A successful MAIL/RCPT reply carrying the plugin's words instead of smtp-server's. */
  private okReply: Reply | undefined;
  /** BDAT: the message in chunks, if one is open. */
  private readonly chunking: ChunkedTransfer;

  constructor(server: SMTPServer & SessionFactory, socket: net.Socket | tls.TLSSocket, options?: SMTPConnectionOptions | null, carried?: Carried) {
    super(server, socket, options);
    this.timeLimits = carried?.timeLimits ?? new ConnectionTimeLimits(this.server.options.socketTimeout ?? Infinity, this, this.server.firstCommandTimeout);
    this.timeLimits.retarget(this);
    if (carried) {
      this.yubin = carried.session;
      this.yubin.rewire(this);
    } else {
      this.yubin = server.createSession(this);
    }
    this.chunking = new ChunkedTransfer(this.chunkingWire());
  }

  // ---- wire facts for the session (WireState) ----

  get remoteIp(): string {
    return this.remoteAddress;
  }

  get localIp(): string {
    return this.localAddress;
  }

  get heloName(): string | undefined {
    return this.hostNameAppearsAs || undefined;
  }

  get authUser(): string | undefined {
    const user: unknown = this.session.user;
    return typeof user === 'string' ? user : undefined;
  }

  get esmtp(): boolean {
    return this.openingCommand === 'EHLO';
  }

  /**
   * smtp-server holds every greeting back 100 ms to catch early talkers, which
   * caps a client that opens one connection per message at 10 messages a
   * second. Early-talker detection is policy (spamdyke's greeting-delay-secs),
   * so it belongs to a connect-hook plugin; here the greeting goes out at once
   * (the adapter's init() calls socketReady() without the delay).
   */
  override init(): void {
    this.socket.once('close', this.stopTimeLimits);
    super.init();
  }

  private readonly stopTimeLimits = () => this.timeLimits.stop();

  /** Takes up a parked socket (made with what the parked record carried), ready for the client's first command. */
  resume(clientHostname: string | false): void {
    this.socket.once('close', this.stopTimeLimits);
    this.resumeParked(clientHostname);
  }

  protected override socketReady(): void {
    const pending = this.yubin.slotPending;
    if (!pending) return this.greetUnder(this.server.connections.size + this.server.parkedCount);
    // In a cluster worker the listener's count is the primary's, across workers: one IPC round trip.
    pending.ready.then(
      (slot) => {
        if (!this.socket.destroyed) this.greetUnder(slot.total);
      },
      () => this.drop(),
    );
  }

  /** Greets, unless `open` (this connection included) is past the listener's maxConnections. */
  private greetUnder(open: number): void {
    const { maxClients } = this.server.options;
    if (maxClients && open > maxClients) {
      this.yubin.overCapacity();
      this.send(421, `4.7.0 ${this.name} Too many connections, try again later`);
      return;
    }
    this.proceedToGreeting();
  }

  // ---- replies ----

  /** Replies that already start with an enhanced status code keep it; the rest get smtp-server's. */
  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    if (code >= 200 && code < 300 && this.okReply && context !== false) {
      const reply = this.okReply;
      this.okReply = undefined;
      return super.send(reply.code, formatReply(reply), false);
    }
    const first = Array.isArray(data) ? data[0] : data;
    if (typeof first === 'string' && ENHANCED_PREFIX.test(first)) return super.send(code, data, false);
    return super.send(code, data, context);
  }

  /** Sends an outcome; closes (or drops) the connection when it says so. */
  answer(outcome: Outcome): void {
    if (outcome.silent) return this.drop();
    const { reply } = outcome;
    if (reply.enhanced) this.send(reply.code, formatReply(reply), false);
    else this.send(reply.code, reply.text, false);
    if (outcome.close && reply.code !== 421) this.close(); // send() closes on 421 itself
  }

  /** Use the plugin's words for the next success reply smtp-server sends. */
  useOkReply(reply: Reply): void {
    this.okReply = reply;
  }

  /** The idle timeout (shorter until HELO/EHLO), the total limit, and what plugins lowered of them. */
  private readonly timeLimits: ConnectionTimeLimits;

  /** A changed idle timeout: the duration only, the listener smtp-server put on the socket stays (TimeLimitTarget). */
  idle(ms: number): void {
    this.socket.setTimeout(ms);
  }

  /** maxConnectionTime ran out (TimeLimitTarget). */
  expired(totalMs: number): void {
    this.connectionExpired(totalMs);
  }

  connectionExpired(totalMs: number): void {
    this.yubin.connectionTimedOut(totalMs);
    this.send(421, '4.4.2 Connection time limit reached, closing');
  }

  /** The idle timeout ran out while the connection was parked: what the socket's own timer would have done. */
  idleExpired(): void {
    this.timedOut();
  }

  /**
   * Lets go of the socket if nothing is pending and the wait may be long,
   * and returns what a parked socket keeps; this object is done with then.
   */
  park(unpark: (parked: ParkedConnection) => YubinConnection): ParkedConnection | undefined {
    if (this.timeLimits.idle < MIN_PARKED_IDLE_MS || this.okReply || this.chunking.active) return undefined;
    const socket = this.releaseSocket();
    if (!socket) return undefined;
    socket.removeListener('close', this.stopTimeLimits);
    const parked = new ParkedConnection(socket, this.id, this, this.yubin, this.timeLimits, this.clientHostname, unpark);
    this.timeLimits.retarget(parked);
    this.yubin.rewire(parked);
    this.yubin.park();
    return parked;
  }

  dismiss(text: string): void {
    this.send(421, text);
  }

  /** Lowers the idle timeout and sets or shortens the connection's time limit. */
  limitTime(limits: TimeLimits): void {
    this.timeLimits.lower(limits);
  }

  /** smtp-server re-arms the idle timer after STARTTLS and after it fired: with our timeout, not the listener's. */
  protected override idleTimeout(): number {
    return this.timeLimits.idle;
  }

  /** Ends a message in transfer: the client is told why (421) and the connection closes. */
  abortData(text: string): void {
    this.abortMessage(Object.assign(new Error(text), { code: 'ECONNECTION' }));
    this.send(421, text);
  }

  /** Closes without a word, as tcpserver does for a denied client. */
  drop(): void {
    this.destroySocket();
    this.close();
  }

  /** The 220 line, decided by the connect hook before smtp-server sends it. */
  greeting: Reply | undefined;

  protected override sendGreeting(): void {
    if (!this.greeting) return;
    this.send(this.greeting.code, this.greeting.text, false);
    this.server.parkIdle(this);
  }

  /** A refused greeting (connect hook): the plugin's reply, or nothing for a silent drop, then close. */
  protected override refuse(err: RefusalError & { outcome?: Outcome }, standard: () => void): void {
    if (!err.outcome) return standard();
    this.answer(err.outcome);
    this.close(); // idempotent: answer() may have closed already
  }

  /**
   * A command before the greeting: the client did not wait for it (RFC 5321
   * section 3.1), as bulk senders that blast their dialogue do. smtp-server
   * would answer 421 "You talk too soon"; this is spamdyke's answer, logged
   * as a decision. A connect plugin that holds the greeting back (spamdyke's
   * greeting-delay-secs) makes the test bite.
   */
  protected override earlyTalker(command: Buffer): void {
    this.yubin.earlyTalker(command.toString('latin1').slice(0, 64));
    this.send(554, '5.5.1 Refused. You are not following the SMTP protocol.', false);
    this.close();
  }

  // ---- parser ----

  // Called from smtp-server's constructor: no fields of this class are set yet.
  protected override createParser(): StrictSmtpStream {
    const factory = this.server;
    return new StrictSmtpStream({
      maxCommandLength: factory.maxLineLength,
      maxLineLength: factory.maxLineLength,
      onViolation: (kind) => this.onDataViolation(kind),
    });
  }

  protected override parserError(err: Error): void {
    const text = /too long/i.test(err.message) ? '4.5.2 Line too long, closing connection' : `4.3.0 ${err.message}`;
    this.yubin.log.info({ event: 'protocol', reason: err.message }, 'input error, closing');
    this.send(421, text);
  }

  /** qmail-smtpd's answer to a bare LF, bare CR or NUL in DATA: 451, then hang up. */
  private onDataViolation(kind: DataViolation): void {
    this.yubin.log.warn({ hook: 'data', plugin: 'core', action: 'disconnect', code: 451, reason: kind }, `${kind} in DATA, closing connection`);
    this.abortMessage(Object.assign(new Error(`${kind} in DATA`), { code: 'ECONNECTION' }));
    this.send(451, `4.5.0 ${kind} in message: only CRLF ends a line (see https://cr.yp.to/docs/smtplf.html)`);
    this.close();
  }

  get lineTooLong(): boolean {
    const parser = this.parser;
    return parser instanceof StrictSmtpStream && parser.lineTooLong;
  }

  // ---- HELO / EHLO ----

  protected override greet(verb: 'HELO' | 'EHLO', command: Buffer, callback: () => void): void {
    const parts = command.toString().trim().split(/\s+/);
    if (parts.length !== 2 || !HELO_ARGUMENT.test(parts[1]!)) {
      this.send(501, `5.5.4 Syntax: ${verb} hostname`);
      return callback();
    }
    const hostname = parts[1]!;
    this.yubin.helo(verb, hostname).then(
      (outcome) => {
        if (!outcome.ok) {
          this.answer(outcome);
          return callback();
        }
        this.hostNameAppearsAs = hostname.toLowerCase();
        this.timeLimits.passed();
        this.resetTransaction(); // HELO/EHLO is an implicit RSET
        const first = outcome.reply.text;
        this.send(250, verb === 'EHLO' ? [first, ...this.extensions()] : first, false);
        callback();
      },
      (err: unknown) => this.internalError(err, callback),
    );
  }

  /** The EHLO keywords of this session. */
  private extensions(): string[] {
    const options = this.server.options;
    const out = ['PIPELINING', `SIZE ${options.size ?? 0}`, '8BITMIME', 'BINARYMIME', 'CHUNKING', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'DSN'];
    if (!this.secure && !this.isDisabled('STARTTLS')) out.push('STARTTLS');
    // RFC 8689: only a TLS session can promise the message stays on TLS.
    if (this.secure) out.push('REQUIRETLS');
    out.push(limitsKeyword(this.yubin.limits));
    if (this.yubin.authOffered) out.push(`AUTH ${this.yubin.authMechanisms().join(' ')}`);
    return out;
  }

  // ---- DATA and BDAT ----

  protected override dataCommand(_command: Buffer, callback: () => void, proceed: () => void): void {
    // RFC 3030 section 3: a binary body cannot be sent with DATA.
    if (this.bodyType === 'BINARYMIME') {
      this.send(503, '5.5.1 Error: BODY=BINARYMIME requires BDAT');
      return callback();
    }
    proceed();
  }

  protected override chunkCommand(command: Buffer, callback: () => void): void {
    this.chunking.command(command.toString('latin1'), callback);
  }

  protected override extraBodyTypes(): readonly string[] {
    return ['BINARYMIME'];
  }

  // Until BDAT LAST (or RSET) the transaction is the chunks': no second envelope, no DATA, no TLS or AUTH in between.
  protected override outOfSequence(verb: string): string | undefined {
    if (!this.chunking?.active || !CLOSED_DURING_BDAT.has(verb)) return undefined;
    return `5.5.1 Error: ${verb} not allowed before BDAT LAST`;
  }

  protected override awaitingChunk(): boolean {
    return this.chunking.awaitingClient;
  }

  // smtp-server resets from its own code too; the optional chain covers a reset from its constructor, before this class's fields exist.
  protected override transactionReset(): void {
    this.chunking?.reset();
  }

  private chunkingWire(): ChunkingWire {
    const conn = this;
    return {
      send: (code, text) => conn.send(code, text),
      close: () => conn.close(),
      get parser() {
        const parser = conn.parser;
        return parser instanceof StrictSmtpStream ? parser : undefined;
      },
      get envelope() {
        return conn.envelopeReady;
      },
      get binary() {
        return conn.bodyType === 'BINARYMIME';
      },
      get maxMessageSize() {
        return conn.yubin.limits.maxMessageSize;
      },
      beginMessage: (): FedMessage => conn.beginMessage(),
      answerMessage: (message): SentReply => conn.answerMessage(message),
      dropMessage: (message, reason) => {
        conn.yubin.log.info({ event: 'protocol', reason }, 'BDAT message dropped');
        conn.abandonMessage(message, Object.assign(new Error(reason), { code: 'ECONNECTION' }));
      },
    };
  }

  // ---- AUTH ----

  protected override authCommand(command: Buffer, callback: () => void, proceed: () => void): void {
    if (!this.yubin.authAvailable) {
      this.send(502, '5.5.1 AUTH not available on this listener');
      return callback();
    }
    if (this.authUser !== undefined) {
      this.send(503, '5.5.1 Already authenticated');
      return callback();
    }
    if (this.session.envelope.mailFrom) {
      this.send(503, '5.5.1 No AUTH during a mail transaction');
      return callback();
    }
    if (!this.yubin.authOffered) {
      this.send(538, '5.7.11 Encryption required for requested authentication mechanism');
      return callback();
    }
    const method = (command.toString().trim().split(/\s+/)[1] ?? '').toUpperCase();
    if (method && !this.yubin.authMechanisms().includes(method)) {
      this.send(504, '5.5.4 Unrecognized authentication type');
      return callback();
    }
    proceed();
  }

  private internalError(err: unknown, callback: () => void): void {
    this.yubin.log.error({ err }, 'internal error');
    this.send(451, '4.3.0 Internal error, please try again later');
    callback();
  }
}

/** RFC 9422's LIMITS keyword: the limits this session will hold the client to (0 is "none" and is left out). */
function limitsKeyword(limits: { maxRecipients: number; maxMessagesPerConnection: number; maxRecipientDomains: number }): string {
  const out = [`RCPTMAX=${limits.maxRecipients}`];
  if (limits.maxMessagesPerConnection > 0) out.push(`MAILMAX=${limits.maxMessagesPerConnection}`);
  if (limits.maxRecipientDomains > 0) out.push(`RCPTDOMAINMAX=${limits.maxRecipientDomains}`);
  return `LIMITS ${out.join(' ')}`;
}
