/**
 * The hooks a plugin may serve, the context each one receives and the answers
 * each one may give. These are the public types plugin authors write against.
 */
import type { Readable } from 'node:stream';
import type { Accept, Continue, Defer, Discard, Disconnect, Reject } from './answers.js';

/**
 * Typed state on a connection, shared between plugins the way tcprules passed
 * environment variables to the programs after it. Plugins add their own
 * fields with declaration merging:
 *
 *     declare module 'yubin-mail' { interface ConnectionState { myFlag?: boolean } }
 */
export interface ConnectionState {
  /** tcprules RELAYCLIENT: present (even empty) means this client may relay. */
  relayClient?: string;
  /** tcprules RBLSMTPD: unset = look up DNSBLs, '' = skip them, text = refuse with it. */
  rblsmtpd?: string;
  /** Whitelisted client: anti-spam plugins skip it. */
  trusted?: boolean;
  /** tcprules MAXCONNIP: open connections allowed from this client's IP, overriding the listener's limit (0: no limit). */
  maxConnectionsPerIp?: number;
  /** Every variable a tcprules rule set, as tcpserver put them into the environment. */
  env: Record<string, string>;
}

/** Typed state on one mail transaction (MAIL to the end of DATA); same merging rules. */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface TransactionState {}

export interface Connection {
  /** Connection id, also in every log line about it. */
  readonly id: string;
  /** Name of the listener that accepted it. */
  readonly listener: string;
  /** What the listener speaks: a mailbox plugin refuses POP3 to a user with POP disabled. */
  readonly protocol: 'smtp' | 'pop3';
  readonly remoteIp: string;
  readonly remotePort: number;
  readonly localIp: string;
  readonly localPort: number;
  /** TLS is active (implicit TLS, or after STARTTLS). */
  readonly secure: boolean;
  /** Name given with HELO/EHLO, once accepted. */
  readonly heloName: string | undefined;
  /** The authenticated user, once AUTH succeeded. */
  readonly authUser: string | undefined;
  /** Verified reverse DNS name of the client, when a plugin looked it up. */
  remoteHost: string | undefined;
  /** RELAYCLIENT was set or the client authenticated: recipients anywhere are allowed. */
  readonly relayAllowed: boolean;
  readonly state: ConnectionState;
  /** Runs once when the connection ends, however it ends. */
  onClose(callback: () => void): void;
  /**
   * Tightens this connection's timeouts, in milliseconds: `idle` between
   * commands, `total` for the whole connection (spamdyke's idle-timeout-secs
   * and connection-timeout-secs). It only ever lowers the listener's limits.
   */
  limitTime(limits: TimeLimits): void;
}

export interface TimeLimits {
  readonly idle?: number;
  readonly total?: number;
}

export interface Address {
  /** The whole address as given, without angle brackets. */
  readonly address: string;
  /** Part before the last '@' (empty for the null sender). */
  readonly local: string;
  /** Lower-cased part after the last '@'. */
  readonly domain: string;
}

export type SmtpParams = Readonly<Record<string, string | true>>;

export interface Recipient extends Address {
  readonly params: SmtpParams;
  /** The domain is one of ours (config localDomains and mailbox plugins). */
  readonly localDomain: boolean;
}

export interface Transaction {
  /** Queue id the message will carry. */
  readonly id: string;
  /** Envelope sender; null for the null sender `<>`. */
  readonly sender: Address | null;
  readonly senderParams: SmtpParams;
  /** Recipients accepted so far (discarded ones are not listed). */
  readonly recipients: readonly Recipient[];
  readonly state: TransactionState;
}

/** A header as received: `name` as written, `value` unfolded and trimmed. */
export interface Header {
  readonly name: string;
  readonly value: string;
}

export interface Message {
  /** Size in octets as received (CRLF line ends, before dot-unstuffing is undone). */
  readonly size: number;
  /** The header section as received, in order. */
  readonly headers: readonly Header[];
  /** Values of every header with this name (case-insensitive), in order. */
  header(name: string): string[];
  /** Adds a header on top of the message, above the ones received. */
  addHeader(name: string, value: string): void;
  /** The message as it will be queued (added headers, then what was received). */
  stream(): Readable;
}

/**
 * What every hook context carries, whatever the hook.
 */
export interface HookContextBase {
  /**
   * Fires when this hook call has run out of time (`hookTimeout`; the reason
   * is a DOMException named `TimeoutError`) or the connection closed (or, for
   * deliver, the queue is stopping; the reason is then an `AbortError`). Its
   * answer no longer counts by then. Pass it to anything slow (the DNS
   * service, the store, a spamd or clamd call, `fetch`); a plugin doing work
   * in steps may check `signal.aborted` or call `signal.throwIfAborted()`.
   */
  readonly signal: AbortSignal;
}

export interface ConnectContext extends HookContextBase {
  readonly connection: Connection;
}

export interface HeloContext extends HookContextBase {
  readonly connection: Connection;
  readonly verb: 'HELO' | 'EHLO';
  readonly hostname: string;
}

export interface AuthContext extends HookContextBase {
  readonly connection: Connection;
  readonly method: string;
  readonly username: string;
  /** The clear password (PLAIN, LOGIN); undefined for challenge-response methods. */
  readonly password: string | undefined;
  /** For challenge-response methods (CRAM-MD5, APOP): checks a stored clear secret. */
  verify(secret: string): boolean;
  /**
   * POP3: the Maildir this user's session opens. The plugin that accepts the
   * login names it; a POP3 login accepted without one is refused. SMTP ignores it.
   */
  mailbox(maildir: string): void;
}

export interface MailContext extends HookContextBase {
  readonly connection: Connection;
  readonly transaction: Transaction;
  readonly sender: Address | null;
  readonly params: SmtpParams;
}

export interface RcptContext extends HookContextBase {
  readonly connection: Connection;
  readonly transaction: Transaction;
  readonly recipient: Recipient;
  /**
   * Lets this recipient through the core's relay guard although its domain is
   * not local (rcpthosts does this for the domains it lists, e.g. backup MX).
   */
  permitRelay(): void;
}

export interface DataContext extends HookContextBase {
  readonly connection: Connection;
  readonly transaction: Transaction;
  readonly message: Message;
}

export type QueueContext = DataContext;

/**
 * A queued message as the deliver hook sees it. Every recipient delivered
 * from the message in one go (all its local recipients) shares one copy.
 */
export interface DeliveryMessage extends Pick<Message, 'size' | 'stream'> {
  /**
   * The whole message in memory, read from the spool once and shared by
   * every recipient delivered with this one: a plugin that writes a copy per
   * recipient takes this rather than a stream() of its own.
   */
  read(): Promise<Buffer>;
}

/** One recipient of one queued message, handed to the deliver hook. */
export interface Delivery {
  readonly queueId: string;
  readonly sender: Address | null;
  readonly recipient: Address;
  /** The recipient's domain is one of ours: nobody answering means "no such mailbox", never "send it out". */
  readonly local: boolean;
  /** 1 on the first try. */
  readonly attempt: number;
  /** When the message was queued (milliseconds since the epoch). */
  readonly received: number;
  /** The message as queued, with the headers the server added (CRLF line ends). */
  readonly message: DeliveryMessage;
  /**
   * Sends a copy on to other addresses through the queue, with the same
   * envelope sender (an alias, a forward, a catch-all), as qmail-local's
   * forward does. `headers` (whole lines without line ends, e.g. a
   * Delivered-To that makes a loop visible) go on top. Resolves with the new
   * message's queue id once it is safely queued.
   */
  forward(recipients: readonly string[], headers?: readonly string[]): Promise<string>;
  /**
   * Queues a new message of the plugin's own making (an auto-reply, a
   * notice), with its own envelope, committed to the spool as durably as
   * mail received over SMTP, and delivered by the queue like any other.
   * Resolves with its queue id once it is safely queued.
   */
  send(message: NewMessage): Promise<string>;
}

/** A message a deliver plugin makes and hands to `Delivery.send`. */
export interface NewMessage {
  /** Envelope sender: an address, or '' for the null sender `<>` (what auto-replies and notices use, RFC 3834). */
  readonly sender: string;
  /** Envelope recipients, at least one. */
  readonly recipients: readonly string[];
  /** The whole message, header section and body; bare LF line ends are stored as CRLF. */
  readonly message: string | Uint8Array;
}

export interface DeliverContext extends HookContextBase {
  readonly delivery: Delivery;
}

/**
 * Asked at RCPT, of the plugins in `delivery.plugins`, for a recipient of a
 * local domain: would your deliver hook take this address? What the
 * session can know is refused there, in the session, instead of being
 * accepted and bounced later to a sender who may be forged (backscatter).
 *
 * Answer `accept` (mine, it will be delivered), `reject` (the deliver hook
 * would bounce it: 550 5.1.1 now instead), `defer` (cannot tell now: 4xx) or
 * `continue` (not mine). When every plugin that delivers also verifies and
 * all continue, nobody would take the address and it is refused, as the
 * queue would bounce it.
 */
export interface VerifyContext extends HookContextBase {
  readonly connection: Connection;
  readonly sender: Address | null;
  readonly recipient: Recipient;
  /**
   * The address the deliver hook's `Delivered-To` line will name for this
   * recipient, when it is not the recipient's own (an extension address
   * `alice-news@` delivered to `alice@`). A message that already carries
   * that line is refused as a loop at the end of DATA instead of bouncing.
   */
  deliveredTo(address: string): void;
}

export interface HookContexts {
  connect: ConnectContext;
  helo: HeloContext;
  auth: AuthContext;
  mail: MailContext;
  rcpt: RcptContext;
  data: DataContext;
  queue: QueueContext;
  deliver: DeliverContext;
  verify: VerifyContext;
}

export type HookName = keyof HookContexts;

/** A hook context as the core builds it, before the pipeline adds the run's own signal. */
export type HookInput<K extends HookName> = Omit<HookContexts[K], 'signal'>;
export const HOOK_NAMES: readonly HookName[] = ['connect', 'helo', 'auth', 'mail', 'rcpt', 'data', 'queue', 'deliver', 'verify'];

type SessionAnswer = Continue | Accept | Reject | Defer | Disconnect;
type TransactionAnswer = SessionAnswer | Discard;

/** What each hook may answer. `discard` only makes sense once there is a message or recipient to drop. */
export interface HookAnswers {
  connect: SessionAnswer;
  helo: SessionAnswer;
  auth: SessionAnswer;
  mail: SessionAnswer;
  rcpt: TransactionAnswer;
  data: TransactionAnswer;
  queue: TransactionAnswer;
  /** accept = delivered, defer = try again later, reject = bounce. */
  deliver: Continue | Accept | Reject | Defer;
  /** accept = would be delivered, reject = would bounce (refused at RCPT), defer = cannot tell now. */
  verify: Continue | Accept | Reject | Defer;
}

export type HookFunction<K extends HookName> = (context: HookContexts[K]) => HookAnswers[K] | Promise<HookAnswers[K]>;
export type Hooks = { [K in HookName]?: HookFunction<K> };
