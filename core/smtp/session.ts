/**
 * Session state and policy for one SMTP connection: builds the hook contexts,
 * runs the listener's pipeline, applies the core's own rules (relay guard,
 * limits, loop detection, durable queueing) and says what to reply. It knows
 * nothing of the wire: `connection.ts` adapts smtp-server to it.
 */
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { answer, type FinalAnswer, type Reply } from '../answers.js';
import { hasSenderRouting, splitAddress } from '../address.js';
import type { Address, Connection, ConnectionState, Header, HookInput, HookName, Recipient, SmtpParams, TimeLimits, Transaction, TransactionState } from '../hooks.js';
import type { HookResult, Pipeline } from '../pipeline.js';
import type { ListenerMetrics } from '../services/metrics.js';
import { authenticate, listenerLogin } from '../session/authenticate.js';
import { overIpLimit, type IpSlot, type PendingSlot } from '../session/ip-connections.js';
import type { ListenerRuntime, SessionEnv } from '../session/runtime.js';
import type { SpoolFile } from '../queue/spool.js';
import { HeaderCollector, hopCount, ReceivedMessage, tlsRequiredNo } from './message.js';
import { receivedHeader } from './received.js';
import { DataRate } from '../time-limits.js';
import { HookScope } from '../hook-scope.js';

/** What the wire layer needs to know to answer. */
export interface Outcome {
  readonly reply: Reply;
  /** The command succeeded (greeting sent, sender/recipient accepted, message taken). */
  readonly ok: boolean;
  /** Close the connection after the reply. */
  readonly close: boolean;
  /** Close without replying (tcpserver's deny). */
  readonly silent: boolean;
}

/** Live connection facts the wire layer owns (they change with STARTTLS and AUTH). */
export interface WireState {
  readonly id: string;
  readonly remoteIp: string;
  readonly remotePort: number;
  readonly localIp: string;
  readonly localPort: number;
  readonly secure: boolean;
  readonly heloName: string | undefined;
  readonly authUser: string | undefined;
  /** The client greeted with EHLO. */
  readonly esmtp: boolean;
  /** Lowers the connection's timeouts (Connection.limitTime). */
  limitTime(limits: TimeLimits): void;
  /** Ends a message in transfer with 421 and this text, and closes. */
  abortData(text: string): void;
  /** Says 421 with this text and closes (a draining listener). */
  dismiss(text: string): void;
  /** Closes without a word. */
  drop(): void;
}

/** A data stream from smtp-server, with its size bookkeeping. */
export type DataStream = Readable & { sizeExceeded?: boolean };

/** Time a message in transfer gets before the minimum data rate is enforced (at most the idle timeout). */
const DATA_RATE_GRACE_MS = 60_000;

const ok = (reply: Reply): Outcome => ({ reply, ok: true, close: false, silent: false });

class ConnectionView implements Connection {
  readonly state: ConnectionState = { env: {} };
  remoteHost: string | undefined;
  readonly closeCallbacks: Array<() => void> = [];

  constructor(
    /** The wire the connection is on now: smtp-server's connection, or a parked socket's record. */
    public wire: WireState,
    readonly listener: string,
  ) {}

  get id() {
    return this.wire.id;
  }
  get remoteIp() {
    return this.wire.remoteIp;
  }
  get remotePort() {
    return this.wire.remotePort;
  }
  get localIp() {
    return this.wire.localIp;
  }
  get localPort() {
    return this.wire.localPort;
  }
  get secure() {
    return this.wire.secure;
  }
  get heloName() {
    return this.wire.heloName;
  }
  get authUser() {
    return this.wire.authUser;
  }
  get protocol(): 'smtp' {
    return 'smtp';
  }
  get relayAllowed() {
    return this.state.relayClient !== undefined || this.wire.authUser !== undefined;
  }
  onClose(callback: () => void): void {
    this.closeCallbacks.push(callback);
  }
  limitTime(limits: TimeLimits): void {
    this.wire.limitTime(limits);
  }
}

class TransactionImpl implements Transaction {
  readonly recipients: Recipient[] = [];
  readonly state: TransactionState = {};
  /** RCPTs answered 250 so far, duplicates and discards included: what maxRecipients counts. */
  taken = 0;
  /**
   * Normalised addresses already taken (a repeated RCPT is answered 250 and delivered
   * once), each with the Delivered-To address local delivery will write for it ('' for
   * a remote or discarded one): a message already carrying that line loops.
   */
  readonly seen = new Map<string, string>();
  /** Domains of the recipients taken (RCPTDOMAINMAX counts them). */
  readonly domains = new Set<string>();
  constructor(
    readonly id: string,
    readonly sender: Address | null,
    readonly senderParams: SmtpParams,
  ) {}
}

export class SmtpSession {
  readonly connection: ConnectionView;
  /** Made on first use, and let go while the connection is parked: a pino child is a few hundred bytes. */
  private logger: Logger | undefined;
  private tx: TransactionImpl | undefined;
  /** A DATA is being received or decided on. */
  busy = false;
  private authFailures = 0;
  /** MAIL commands accepted on this connection (MAILMAX counts them). */
  private messagesStarted = 0;
  private closed = false;
  /**
   * Ends when the connection is gone, however it went: every hook run of this
   * connection (verify and auth too) is stopped with it, so a plugin waiting on
   * something slow for a client that left sees its signal fire.
   */
  private hookScope: HookScope | undefined;
  /** This connection's place among those open from its IP (set by the listener at accept). */
  ipSlot: IpSlot | undefined;
  /** In a cluster worker: the slot the primary is counting, until it answers. */
  slotPending: PendingSlot | undefined;
  /** The listener's connection, message and recipient counters. */
  private readonly counters: ListenerMetrics;

  constructor(
    readonly runtime: ListenerRuntime,
    private readonly env: SessionEnv,
    wire: WireState,
  ) {
    this.connection = new ConnectionView(wire, runtime.name);
    this.counters = env.metrics.listener(runtime.name);
  }

  get log(): Logger {
    return (this.logger ??= this.env.log.child({ listener: this.runtime.name, conn: this.wire.id, ip: this.wire.remoteIp }));
  }

  private get scope(): HookScope {
    return (this.hookScope ??= new HookScope());
  }

  private get wire(): WireState {
    return this.connection.wire;
  }

  /** The connection moved to another wire (parked after the greeting, or taken up again). */
  rewire(wire: WireState): void {
    this.connection.wire = wire;
  }

  /** Nothing is pending and the connection is parked: what is made on first use can go until then. */
  park(): void {
    this.logger = undefined;
    if (this.hookScope?.idle) this.hookScope = undefined;
  }

  /** A draining listener sends the client away: 421 and close. */
  dismiss(text: string): void {
    this.wire.dismiss(text);
  }

  /** Closes without a word. */
  drop(): void {
    this.wire.drop();
  }

  get limits() {
    return this.runtime.config.limits;
  }

  /** A MAIL transaction is open. */
  get inTransaction(): boolean {
    return this.tx !== undefined;
  }

  /** The listener can take AUTH at all: some plugin serves the auth hook. */
  get authAvailable(): boolean {
    return this.runtime.pipeline.has('auth');
  }

  /** AUTH may be offered now: available, not yet done, and over TLS unless the listener allows clear text. */
  get authOffered(): boolean {
    return this.authAvailable && this.connection.authUser === undefined && (this.connection.secure || this.runtime.config.allowInsecureAuth);
  }

  /** SASL mechanisms to offer: what the auth plugins check and smtp-server speaks. */
  authMechanisms(): string[] {
    return this.runtime.pipeline.authMechanisms().filter((m) => m === 'PLAIN' || m === 'LOGIN' || m === 'CRAM-MD5');
  }

  async connect(): Promise<Outcome> {
    this.log.info({ event: 'connect', port: this.connection.remotePort, local: `${this.connection.localIp}:${this.connection.localPort}` }, 'connection opened');
    const result = await this.decide('connect', { connection: this.connection });
    if (result) {
      this.counters.connection(result.ok ? 'accepted' : 'refused');
      return result;
    }
    const limit = overIpLimit(this.ipSlot, this.connection.state, this.limits.maxConnectionsPerIp);
    if (limit !== undefined) {
      this.counters.connection('too-many');
      this.logDecision('connect', 'core', 'disconnect', 421, `${this.ipSlot!.rank} connections from ${this.connection.remoteIp}, limit ${limit}`);
      return this.outcome(answer.disconnect(`Too many connections from your IP address (${limit}), try again later`, '4.7.0'));
    }
    this.counters.connection('accepted');
    return ok({ code: 220, enhanced: '', text: `${this.env.hostname} ${this.runtime.config.greeting}` });
  }

  async helo(verb: 'HELO' | 'EHLO', hostname: string): Promise<Outcome> {
    const result = await this.decide('helo', { connection: this.connection, verb, hostname });
    if (result) return result;
    this.tx = undefined; // an accepted HELO/EHLO resets the transaction (RFC 5321 section 4.1.4)
    return ok({ code: 250, enhanced: '', text: this.env.hostname });
  }

  async auth(method: string, username: string, password: string | undefined, verify: (secret: string) => boolean): Promise<Outcome> {
    const ctx = { connection: this.connection, method, username, password, verify, mailbox: () => undefined };
    const r = await authenticate(
      {
        ...listenerLogin(this.runtime, this.env, this.log, this.scope),
        // A plugin fault was logged where the pipeline caught it.
        record: (d, r) => d.counted && this.logLine('auth', d.plugin, d.action, d.code, d.reason, { user: username, account: r.account, method }),
      },
      ctx,
    );
    switch (r.kind) {
      case 'locked':
        // RFC 4954's temporary failure when the counts cannot be read (shared store down, closed).
        if (r.verdict.unavailable) return this.outcome(answer.defer(454, '4.7.0', 'Temporary authentication failure'));
        return this.outcome(answer.defer(454, '4.7.0', 'Too many failed logins, try again later'));
      case 'accepted':
        this.log.info({ event: 'auth', user: username, method }, 'authenticated');
        return ok({ code: 235, enhanced: '2.7.0', text: 'Authentication successful' });
      case 'deferred':
      case 'disconnected':
        return this.outcome(r.answer);
    }
    this.authFailures++;
    if (this.authFailures >= this.limits.maxAuthFailures) {
      this.logDecision('auth', 'core', 'disconnect', 421, `${this.authFailures} failed AUTH attempts`, { user: username });
      return this.outcome(answer.disconnect('Too many failed authentication attempts', '4.7.0'));
    }
    return this.outcome(r.answer ?? answer.reject(535, '5.7.8', 'Authentication credentials invalid'));
  }

  async mail(address: string, params: SmtpParams): Promise<Outcome> {
    if (this.runtime.config.requireAuth && this.connection.authUser === undefined) {
      return this.coreReject('mail', answer.reject(530, '5.7.0', 'Authentication required'));
    }
    if (!this.env.spoolSpace.ok()) {
      return this.coreReject('mail', answer.defer(452, '4.3.1', 'Insufficient system storage, please try again later'));
    }
    const mailMax = this.limits.maxMessagesPerConnection;
    if (mailMax > 0 && this.messagesStarted >= mailMax) {
      return this.coreReject('mail', answer.disconnect(`Too many messages in one connection (at most ${mailMax}), please reconnect`, '4.7.0'));
    }
    const sender = address === '' ? null : splitAddress(address);
    const tx = new TransactionImpl(this.env.spool.newId(), sender, params);
    const result = await this.decide('mail', { connection: this.connection, transaction: tx, sender, params }, { from: address });
    if (result && !result.ok) return result;
    this.tx = tx;
    this.messagesStarted++;
    if (result) return result;
    this.logDecision('mail', 'core', 'accept', 250, undefined, { from: address, id: tx.id });
    return ok({ code: 250, enhanced: '2.1.0', text: 'Sender OK' });
  }

  async rcpt(address: string, params: SmtpParams): Promise<Outcome> {
    const outcome = await this.recipient(address, params);
    this.counters.recipient(outcome.ok);
    return outcome;
  }

  private async recipient(address: string, params: SmtpParams): Promise<Outcome> {
    const tx = this.tx;
    if (!tx) return this.coreReject('rcpt', answer.reject(503, '5.5.1', 'MAIL first'));
    // Every RCPT answered 250 counts, a repeated address too: smtp-server's own limit
    // counts distinct addresses only, so 1,000 copies of one address went through it.
    if (tx.taken >= this.limits.maxRecipients) {
      return this.coreReject('rcpt', answer.defer(452, '4.5.3', `Too many recipients (at most ${this.limits.maxRecipients} per message)`), address);
    }
    const recipient = this.makeRecipient(address, params);
    const domainMax = this.limits.maxRecipientDomains;
    if (domainMax > 0 && !tx.domains.has(recipient.domain) && tx.domains.size >= domainMax) {
      return this.coreReject('rcpt', answer.defer(452, '4.5.3', `Too many recipient domains (at most ${domainMax} per message)`), address);
    }
    const key = recipientKey(recipient);
    if (tx.seen.has(key)) {
      tx.taken++;
      this.logDecision('rcpt', 'core', 'accept', 250, 'repeated recipient, delivered once', { rcpt: recipient.address });
      return ok({ code: 250, enhanced: '2.1.5', text: 'Recipient OK' });
    }
    let relayPermitted = false;
    const permitRelay = () => {
      relayPermitted = true;
    };
    const ctx = { connection: this.connection, transaction: tx, recipient, permitRelay };
    const { answer: a, plugin } = await this.runHook('rcpt', ctx, { rcpt: recipient.address });
    if (a.action === 'reject' || a.action === 'defer' || a.action === 'disconnect') return this.outcome(a);
    // The relay guard holds whatever the plugins said: no recipient passes unless its
    // domain is ours (or a plugin vouched for it) and it asks for no onward routing,
    // or the client may relay. A listener without plugins is never an open relay.
    if (!this.connection.relayAllowed && (!(recipient.localDomain || relayPermitted) || hasSenderRouting(recipient.local))) {
      return this.coreReject('rcpt', answer.reject(550, '5.7.1', 'Relaying denied'), recipient.address);
    }
    let deliveredTo = '';
    if (a.action !== 'discard' && recipient.localDomain) {
      deliveredTo = key;
      if (this.runtime.delivery?.has('verify')) {
        const verdict = await this.verify(tx, recipient);
        if (verdict.refused) return verdict.refused;
        deliveredTo = verdict.deliveredTo ?? key;
      }
    }
    tx.taken++;
    tx.seen.set(key, deliveredTo);
    tx.domains.add(recipient.domain);
    if (a.action === 'discard') return ok(a);
    tx.recipients.push(recipient);
    if (a.action === 'accept') return ok(a);
    this.logDecision('rcpt', plugin ?? 'core', 'accept', 250, undefined, { rcpt: recipient.address });
    return ok({ code: 250, enhanced: '2.1.5', text: 'Recipient OK' });
  }

  /**
   * Would local delivery take this recipient? Asked of the delivery plugins
   * that can say (the verify hook), so an address that could only bounce is
   * refused now, to the client, and never bounced to a sender who may be forged.
   */
  private async verify(tx: TransactionImpl, recipient: Recipient): Promise<{ refused?: Outcome; deliveredTo?: string }> {
    const delivery = this.runtime.delivery!;
    let deliveredTo: string | undefined;
    const ctx = { connection: this.connection, sender: tx.sender, recipient, deliveredTo: (address: string) => void (deliveredTo = address.toLowerCase()) };
    const { answer: a, plugin, fault } = await delivery.run('verify', ctx, this.log, this.scope);
    if (a.action === 'reject' || a.action === 'defer') {
      if (!fault) this.logDecision('rcpt', plugin ?? 'core', a.action, a.code, `verify: ${a.text}`, { enhanced: a.enhanced, rcpt: recipient.address });
      return { refused: this.outcome(a) };
    }
    // Nobody would take it, and every plugin that delivers has said so: the queue could only bounce it.
    if (a.action === 'continue' && delivery.everyServes('deliver', 'verify')) {
      return { refused: this.coreReject('rcpt', answer.reject(550, '5.1.1', 'Sorry, no mailbox here by that name. (#5.1.1)'), recipient.address) };
    }
    return { deliveredTo };
  }

  async data(stream: DataStream, lineTooLong: () => boolean): Promise<Outcome> {
    // The wire layer destroys the stream with an error when the client breaks the
    // protocol mid-message; that may happen before anything reads it.
    stream.on('error', () => undefined);
    const tx = this.tx;
    this.tx = undefined; // whatever happens, this transaction ends with the reply
    if (!tx) {
      stream.resume();
      return this.coreReject('data', answer.reject(503, '5.5.1', 'RCPT first'));
    }
    this.busy = true;
    try {
      const outcome = await this.receive(tx, stream, lineTooLong);
      this.counters.message(outcome.ok);
      return outcome;
    } finally {
      this.busy = false;
    }
  }

  /** The client sent a command before the greeting; the wire layer refuses it. */
  earlyTalker(command: string): void {
    this.logDecision('connect', 'core', 'reject', 554, 'early talker: a command before the greeting', { command: command.replace(/[\r\n]+$/, '') });
  }

  /** The listener's maxConnections was reached before this one was greeted; the wire layer says 421. */
  overCapacity(): void {
    this.counters.connection('too-many');
  }

  /** The listener's maxConnectionTime ran out; the wire layer says 421 and closes. */
  connectionTimedOut(limit: number): void {
    this.logDecision('connect', 'core', 'disconnect', 421, `connection time limit of ${limit / 1000} s reached`);
  }

  /** Called once when the connection is gone. */
  end(): void {
    if (this.closed) return;
    this.closed = true;
    this.scope.end('connection closed');
    for (const cb of this.connection.closeCallbacks) {
      try {
        cb();
      } catch (err) {
        this.log.error({ err }, 'onClose callback threw');
      }
    }
    this.log.info({ event: 'close' }, 'connection closed');
  }

  private async receive(tx: TransactionImpl, stream: DataStream, lineTooLong: () => boolean): Promise<Outcome> {
    const limits = this.limits;
    let file: SpoolFile | undefined;
    /** The spool could not take the message (a full disk): the rest is read and dropped, the reply is 451. */
    let spoolError: unknown;
    let committed = false;
    try {
      file = this.env.spool.begin(tx.id);
      const protocol = `${this.wire.esmtp ? 'ESMTP' : 'SMTP'}${this.connection.secure ? 'S' : ''}${this.connection.authUser ? 'A' : ''}`;
      const received = receivedHeader({
        heloName: this.connection.heloName,
        remoteHost: this.connection.remoteHost,
        remoteIp: this.connection.remoteIp,
        hostname: this.env.hostname,
        protocol,
        id: tx.id,
        recipients: tx.recipients.map((r) => r.address),
        time: this.env.services.clock.now(),
      });
      // Held in memory with the rest of a small message: one write at commit.
      await file.write(Buffer.from(received)).catch((err: unknown) => (spoolError = err));
      const headers = new HeaderCollector(limits.maxHeaderSize);
      const rate = new DataRate(Math.min(limits.idleTimeout, DATA_RATE_GRACE_MS), limits.minDataRate);
      let size = 0;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (rate.add(chunk.length)) {
          // A byte now and then keeps the idle timeout away; this does not.
          this.logDecision('data', 'core', 'disconnect', 421, `data rate below ${limits.minDataRate} bytes/s (${size} bytes so far)`);
          this.wire.abortData('4.4.2 Data rate too low, closing connection');
          throw Object.assign(new Error('data rate too low'), { code: 'ECONNECTION' });
        }
        // Past the limit the rest is read and dropped: the reply comes after the final dot.
        if (size > limits.maxMessageSize || spoolError !== undefined) continue;
        headers.push(chunk);
        try {
          await file.write(chunk);
        } catch (err) {
          spoolError = err;
        }
      }
      // A stream cut short (connection lost, bare LF) never makes a message.
      if (stream.readableAborted) throw Object.assign(new Error('message not received in full'), { code: 'ECONNECTION' });
      if (spoolError !== undefined) throw spoolError;
      headers.end();
      if (size > limits.maxMessageSize || stream.sizeExceeded) {
        return this.coreReject('data', answer.reject(552, '5.3.4', `Message size exceeds fixed limit of ${limits.maxMessageSize} bytes`));
      }
      if (lineTooLong()) {
        return this.coreReject('data', answer.reject(554, '5.6.0', `Message has a line longer than ${limits.maxLineLength} octets`));
      }
      if (headers.tooLarge) {
        return this.coreReject('data', answer.reject(552, '5.3.4', `Message header section exceeds ${limits.maxHeaderSize} bytes`));
      }
      const parsed = headers.headers();
      if (hopCount(parsed) >= 100) {
        return this.coreReject('data', answer.reject(554, '5.4.6', 'Too many hops, this message is looping'));
      }
      const looping = deliveredToLoop(parsed, tx.seen);
      if (looping) {
        // Local delivery would refuse it as a loop and bounce it; refused here, nobody gets a bounce.
        return this.coreReject('data', answer.reject(554, '5.4.6', `This message is looping: it already has my Delivered-To line (${looping.value}). (#5.4.6)`));
      }
      if (tx.recipients.length === 0) {
        // Every recipient was discarded: take the message and keep nothing.
        this.logDecision('data', 'core', 'discard', 250, 'no recipient left to deliver to');
        return ok(answer.discard(`Ok: discarded`));
      }
      const message = new ReceivedMessage(size, parsed, file);
      const ctx = { connection: this.connection, transaction: tx, message };
      const dataResult = await this.decide('data', ctx);
      if (dataResult) return dataResult;
      const queueResult = await this.decide('queue', ctx);
      if (queueResult) return queueResult;
      await file.commit({
        sender: tx.sender?.address ?? '',
        senderParams: tx.senderParams,
        recipients: tx.recipients.map((r) => ({ address: r.address, params: r.params })),
        received: this.env.services.clock.now(),
        listener: this.runtime.name,
        remoteIp: this.connection.remoteIp,
        heloName: this.connection.heloName,
        authUser: this.connection.authUser,
        prependHeaders: message.prependHeaders,
        ...(tx.senderParams.REQUIRETLS !== true && tlsRequiredNo(parsed) ? { tlsOptional: true as const } : {}),
      });
      committed = true;
      this.env.metrics.decision('queue', 'core', 'accept');
      this.log.info(
        {
          event: 'queued',
          hook: 'queue',
          plugin: 'core',
          action: 'accept',
          code: 250,
          id: tx.id,
          size,
          from: tx.sender?.address ?? '',
          rcpts: tx.recipients.length,
          // For `yubin why`: who it is for, and the id its sender will quote.
          to: tx.recipients.map((r) => r.address),
          messageId: message.header('message-id')[0]?.trim(),
        },
        'message queued',
      );
      return ok({ code: 250, enhanced: '2.0.0', text: `Ok: queued as ${tx.id}` });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ECONNECTION' || stream.readableAborted) throw err;
      // The client hears a neutral text; the reason (ENOSPC, EIO...) is in the log line.
      const e = err as NodeJS.ErrnoException;
      this.env.metrics.decision('queue', 'core', 'defer');
      this.log.error({ hook: 'queue', plugin: 'core', action: 'defer', code: 451, reason: e.message, errno: e.code, id: tx.id }, `queue: core defer: cannot write the message to the queue: ${e.message}`);
      return this.outcome(answer.defer(451, '4.3.0', 'Error writing to the queue, please try again later'));
    } finally {
      if (!committed && file) await abortQuietly(file);
    }
  }

  private makeRecipient(address: string, params: SmtpParams): Recipient {
    let addr = splitAddress(address);
    if (!addr.domain) {
      // RFC 5321 requires taking "<Postmaster>" without a domain; it is ours.
      const domains = this.env.services.localDomains;
      const domain = domains.has(this.env.hostname) ? this.env.hostname : (domains.list()[0] ?? this.env.hostname);
      addr = splitAddress(`${address}@${domain}`);
    }
    return { ...addr, params, localDomain: this.env.services.localDomains.has(addr.domain) };
  }

  /**
   * Runs a hook and says what to reply, or undefined to go on. An accept ends
   * the hook; at mail and queue its text is the reply (a queue plugin that
   * accepts has queued the message itself), elsewhere the core's reply stands.
   */
  private async decide<K extends HookName>(hook: K, ctx: HookInput<K>, extra: Record<string, unknown> = {}): Promise<Outcome | undefined> {
    const { answer: a } = await this.runHook(hook, ctx, extra);
    if (a.action === 'continue') return undefined;
    if (a.action === 'accept') return hook === 'mail' || hook === 'queue' ? ok(a) : undefined;
    return this.outcome(a);
  }

  /** Runs a hook; every decision but a plugin fault (the pipeline logs those) gets one log line. */
  private async runHook<K extends HookName>(hook: K, ctx: HookInput<K>, extra: Record<string, unknown> = {}): Promise<HookResult<K>> {
    const result = await this.runtime.pipeline.run(hook, ctx, this.log, this.scope);
    const a = result.answer;
    if (a.action !== 'continue' && !result.fault) {
      this.logDecision(hook, result.plugin ?? 'core', a.action, a.code, a.text, { enhanced: a.enhanced, ...extra });
    }
    return result;
  }

  private coreReject(hook: HookName, a: FinalAnswer, rcpt?: string): Outcome {
    this.logDecision(hook, 'core', a.action, a.code, a.text, rcpt ? { enhanced: a.enhanced, rcpt } : { enhanced: a.enhanced });
    return this.outcome(a);
  }

  private logDecision(hook: HookName, plugin: string, action: string, code: number, reason: string | undefined, extra: Record<string, unknown> = {}): void {
    this.env.metrics.decision(hook, plugin, action);
    this.logLine(hook, plugin, action, code, reason, extra);
  }

  /** A decision's log line, for one counted elsewhere (a login's, by authenticate()). */
  private logLine(hook: HookName, plugin: string, action: string, code: number, reason: string | undefined, extra: Record<string, unknown> = {}): void {
    this.log.info({ hook, plugin, action, code, reason, ...extra }, `${hook}: ${plugin} ${action}${reason ? ': ' + reason : ''}`);
  }

  private outcome(a: FinalAnswer): Outcome {
    const reply = { code: a.code, enhanced: a.enhanced, text: a.text };
    if (a.action === 'disconnect') return { reply, ok: false, close: true, silent: a.silent };
    const success = a.action === 'accept' || a.action === 'discard';
    return { reply, ok: success, close: false, silent: false };
  }
}

/** A Delivered-To header naming an address local delivery will write that line for: the message would loop. */
function deliveredToLoop(headers: readonly Header[], taken: ReadonlyMap<string, string>): Header | undefined {
  let ours: Set<string> | undefined;
  for (const h of headers) {
    if (h.name.length !== 12 || h.name.toLowerCase() !== 'delivered-to') continue;
    ours ??= new Set(taken.values());
    const value = h.value.toLowerCase();
    if (value && ours.has(value)) return h;
  }
  return undefined;
}

/** One recipient however it is spelt: case folded (as smtp-server compares them), no trailing dot on the domain. */
function recipientKey(r: Recipient): string {
  return `${r.local.toLowerCase()}@${r.domain.replace(/\.+$/, '')}`;
}

async function abortQuietly(file: SpoolFile): Promise<void> {
  try {
    await file.abort();
  } catch {
    // the temporary file is removed at the next start anyway
  }
}
