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
import type { Address, Connection, ConnectionState, HookContexts, HookName, Recipient, SmtpParams, TimeLimits, Transaction, TransactionState } from '../hooks.js';
import type { HookResult, Pipeline } from '../pipeline.js';
import { loginTurn, type Services } from '../services/index.js';
import type { Spool, SpoolFile } from '../queue/spool.js';
import type { ListenerConfig } from '../config/schema.js';
import { HeaderCollector, hopCount, ReceivedMessage } from './message.js';
import { receivedHeader } from './received.js';

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

/** The listener's settings and plugins as they were when the connection arrived; a reload does not change them mid-session. */
export interface ListenerRuntime {
  readonly name: string;
  readonly config: ListenerConfig;
  readonly pipeline: Pipeline;
  /** Held while a connection uses these plugins, so a reload closes them only when unused. */
  readonly lease?: { acquire(): void; release(): void };
}

/** Process-wide things a session uses. */
export interface SessionEnv {
  readonly hostname: string;
  readonly spool: Spool;
  readonly services: Services;
  readonly log: Logger;
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
}

/** A data stream from smtp-server, with its size bookkeeping. */
export type DataStream = Readable & { sizeExceeded?: boolean };

const ok = (reply: Reply): Outcome => ({ reply, ok: true, close: false, silent: false });

class ConnectionView implements Connection {
  readonly state: ConnectionState = { env: {} };
  remoteHost: string | undefined;
  readonly closeCallbacks: Array<() => void> = [];

  constructor(
    private readonly wire: WireState,
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
  constructor(
    readonly id: string,
    readonly sender: Address | null,
    readonly senderParams: SmtpParams,
  ) {}
}

export class SmtpSession {
  readonly connection: ConnectionView;
  readonly log: Logger;
  private tx: TransactionImpl | undefined;
  /** A DATA is being received or decided on. */
  busy = false;
  private authFailures = 0;
  private closed = false;

  constructor(
    readonly runtime: ListenerRuntime,
    private readonly env: SessionEnv,
    private readonly wire: WireState,
  ) {
    this.connection = new ConnectionView(wire, runtime.name);
    this.log = env.log.child({ listener: runtime.name, conn: wire.id, ip: wire.remoteIp });
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
    if (result) return result;
    return ok({ code: 220, enhanced: '', text: `${this.env.hostname} ${this.runtime.config.greeting}` });
  }

  async helo(verb: 'HELO' | 'EHLO', hostname: string): Promise<Outcome> {
    const result = await this.decide('helo', { connection: this.connection, verb, hostname });
    if (result) return result;
    this.tx = undefined; // an accepted HELO/EHLO resets the transaction (RFC 5321 section 4.1.4)
    return ok({ code: 250, enhanced: '', text: this.env.hostname });
  }

  async auth(method: string, username: string, password: string | undefined, verify: (secret: string) => boolean): Promise<Outcome> {
    const throttle = this.env.services.loginThrottle;
    const ip = this.connection.remoteIp;
    const verdict = await loginTurn(throttle, ip, username, method, this.log);
    if (verdict.locked) {
      // No password is checked while locked out: guessing learns nothing.
      this.logDecision('auth', 'core', 'defer', 454, `locked out after ${verdict.failures} failed logins (by ${verdict.by})`, { user: username, method });
      return this.outcome(answer.defer(454, '4.7.0', 'Too many failed logins, try again later'));
    }
    const ctx = { connection: this.connection, method, username, password, verify, mailbox: () => undefined };
    const result = await this.runHook('auth', ctx, { user: username, method });
    const a = result.answer;
    if (a.action === 'accept') {
      throttle.success(ip, username);
      this.log.info({ event: 'auth', user: username, method }, 'authenticated');
      return ok({ code: 235, enhanced: '2.7.0', text: 'Authentication successful' });
    }
    if (a.action === 'defer' || a.action === 'disconnect') return this.outcome(a);
    throttle.failure(ip, username);
    this.authFailures++;
    if (this.authFailures >= this.limits.maxAuthFailures) {
      this.logDecision('auth', 'core', 'disconnect', 421, `${this.authFailures} failed AUTH attempts`, { user: username });
      return this.outcome(answer.disconnect('Too many failed authentication attempts', '4.7.0'));
    }
    if (a.action === 'reject') return this.outcome(a);
    // Every plugin passed: nobody vouched for these credentials.
    this.logDecision('auth', 'core', 'reject', 535, 'no plugin accepted these credentials', { user: username, method });
    return this.outcome(answer.reject(535, '5.7.8', 'Authentication credentials invalid'));
  }

  async mail(address: string, params: SmtpParams): Promise<Outcome> {
    if (this.runtime.config.requireAuth && this.connection.authUser === undefined) {
      return this.coreReject('mail', answer.reject(530, '5.7.0', 'Authentication required'));
    }
    const sender = address === '' ? null : splitAddress(address);
    const tx = new TransactionImpl(this.env.spool.newId(), sender, params);
    const result = await this.decide('mail', { connection: this.connection, transaction: tx, sender, params });
    if (result && !result.ok) return result;
    this.tx = tx;
    if (result) return result;
    this.logDecision('mail', 'core', 'accept', 250, undefined, { from: address, id: tx.id });
    return ok({ code: 250, enhanced: '2.1.0', text: 'Sender OK' });
  }

  async rcpt(address: string, params: SmtpParams): Promise<Outcome> {
    const tx = this.tx;
    if (!tx) return this.coreReject('rcpt', answer.reject(503, '5.5.1', 'MAIL first'));
    const recipient = this.makeRecipient(address, params);
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
    if (a.action === 'discard') return ok(a);
    tx.recipients.push(recipient);
    if (a.action === 'accept') return ok(a);
    this.logDecision('rcpt', plugin ?? 'core', 'accept', 250, undefined, { rcpt: recipient.address });
    return ok({ code: 250, enhanced: '2.1.5', text: 'Recipient OK' });
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
      return await this.receive(tx, stream, lineTooLong);
    } finally {
      this.busy = false;
    }
  }

  /** The client sent a command before the greeting; the wire layer refuses it. */
  earlyTalker(command: string): void {
    this.logDecision('connect', 'core', 'reject', 554, 'early talker: a command before the greeting', { command: command.replace(/[\r\n]+$/, '') });
  }

  /** The listener's maxConnectionTime ran out; the wire layer says 421 and closes. */
  connectionTimedOut(limit: number): void {
    this.logDecision('connect', 'core', 'disconnect', 421, `connection time limit of ${limit / 1000} s reached`);
  }

  /** Called once when the connection is gone. */
  end(): void {
    if (this.closed) return;
    this.closed = true;
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
    const file = await this.env.spool.begin(tx.id);
    let committed = false;
    try {
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
      // The Received header goes out with the first chunk: one write less per message.
      let pending: Buffer | undefined = Buffer.from(received);
      const headers = new HeaderCollector(limits.maxHeaderSize);
      let size = 0;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        size += chunk.length;
        // Past the limit the rest is read and dropped: the reply comes after the final dot.
        if (size > limits.maxMessageSize) continue;
        headers.push(chunk);
        await file.write(pending ? Buffer.concat([pending, chunk]) : chunk);
        pending = undefined;
      }
      if (pending) await file.write(pending);
      // A stream cut short (connection lost, bare LF) never makes a message.
      if (stream.readableAborted) throw Object.assign(new Error('message not received in full'), { code: 'ECONNECTION' });
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
      });
      committed = true;
      this.log.info(
        { event: 'queued', hook: 'queue', plugin: 'core', action: 'accept', code: 250, id: tx.id, size, from: tx.sender?.address ?? '', rcpts: tx.recipients.length },
        'message queued',
      );
      return ok({ code: 250, enhanced: '2.0.0', text: `Ok: queued as ${tx.id}` });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ECONNECTION' || stream.readableAborted) throw err;
      this.log.error({ err, hook: 'queue', plugin: 'core', action: 'defer', code: 451 }, 'cannot write message to the queue');
      return this.outcome(answer.defer(451, '4.3.0', 'Error writing to the queue, please try again later'));
    } finally {
      if (!committed) await abortQuietly(file);
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
  private async decide<K extends HookName>(hook: K, ctx: HookContexts[K]): Promise<Outcome | undefined> {
    const { answer: a } = await this.runHook(hook, ctx);
    if (a.action === 'continue') return undefined;
    if (a.action === 'accept') return hook === 'mail' || hook === 'queue' ? ok(a) : undefined;
    return this.outcome(a);
  }

  /** Runs a hook; every decision but a plugin fault (the pipeline logs those) gets one log line. */
  private async runHook<K extends HookName>(hook: K, ctx: HookContexts[K], extra: Record<string, unknown> = {}): Promise<HookResult<K>> {
    const result = await this.runtime.pipeline.run(hook, ctx, this.log);
    const a = result.answer;
    if (a.action !== 'continue' && !result.fault) {
      this.logDecision(hook, result.plugin ?? 'core', a.action, a.code, a.text, extra);
    }
    return result;
  }

  private coreReject(hook: HookName, a: FinalAnswer, rcpt?: string): Outcome {
    this.logDecision(hook, 'core', a.action, a.code, a.text, rcpt ? { rcpt } : {});
    return this.outcome(a);
  }

  private logDecision(hook: HookName, plugin: string, action: string, code: number, reason: string | undefined, extra: Record<string, unknown> = {}): void {
    this.log.info({ hook, plugin, action, code, reason, ...extra }, `${hook}: ${plugin} ${action}${reason ? ': ' + reason : ''}`);
  }

  private outcome(a: FinalAnswer): Outcome {
    const reply = { code: a.code, enhanced: a.enhanced, text: a.text };
    if (a.action === 'disconnect') return { reply, ok: false, close: true, silent: a.silent };
    const success = a.action === 'accept' || a.action === 'discard';
    return { reply, ok: success, close: false, silent: false };
  }
}

async function abortQuietly(file: SpoolFile): Promise<void> {
  try {
    await file.abort();
  } catch {
    // the temporary file is removed at the next start anyway
  }
}
