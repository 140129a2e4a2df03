/**
 * One pino log record as one syslog sentence a person can read, the way
 * Postfix's lines read:
 *
 *     mx[k3j2]: 203.0.113.9 refused at RCPT by rblsmtpd: 451 4.7.1 listed in bl.example.net (from=<a@example.org> to=<b@example.jp>)
 *     queue: message MX8914PY0GCK001 to bob@example.jp delivered: maildir: delivered to ...
 *     pop3[MX8915CU0GCK005]: login failed for alice@example.jp from 192.0.2.7 (PLAIN) by vpopmail: 535 Authentication credentials invalid
 *
 * The records are the ones the server writes (session decisions with
 * hook/plugin/action/code/reason, connect and close, `queued`, the queue's
 * delivery, bounce and forward lines, POP3 logins); anything else still gives
 * a line: its `msg` and the key fields. A formatter remembers each open SMTP
 * transaction's sender and accepted recipients (from the MAIL and RCPT lines)
 * so a refusal at RCPT or DATA can say whose mail it was; it is fed the
 * records in the order they were written.
 */

export type LogRecord = Readonly<Record<string, unknown>>;

/** The syslog facilities (RFC 5424's numbers; authpriv, ftp as on Linux). */
export const SYSLOG_FACILITIES = {
  kern: 0,
  user: 1,
  mail: 2,
  daemon: 3,
  auth: 4,
  syslog: 5,
  lpr: 6,
  news: 7,
  uucp: 8,
  cron: 9,
  authpriv: 10,
  ftp: 11,
  local0: 16,
  local1: 17,
  local2: 18,
  local3: 19,
  local4: 20,
  local5: 21,
  local6: 22,
  local7: 23,
} as const;

export type SyslogFacility = keyof typeof SYSLOG_FACILITIES;

export const FACILITY_NAMES = Object.keys(SYSLOG_FACILITIES) as [SyslogFacility, ...SyslogFacility[]];

/** Syslog severities: crit 2, err 3, warning 4, notice 5, info 6, debug 7. */
export const SEVERITY = { emerg: 0, alert: 1, crit: 2, err: 3, warning: 4, notice: 5, info: 6, debug: 7 } as const;

/** pino's level (fatal 60, error 50, warn 40, info 30, debug 20, trace 10) as a syslog severity. */
export function severityOf(level: unknown): number {
  const n = typeof level === 'number' ? level : 30;
  if (n >= 60) return SEVERITY.crit;
  if (n >= 50) return SEVERITY.err;
  if (n >= 40) return SEVERITY.warning;
  if (n >= 30) return SEVERITY.info;
  return SEVERITY.debug;
}

/** The `<PRI>` a syslog line starts with. */
export function priority(facility: SyslogFacility, severity: number): number {
  return SYSLOG_FACILITIES[facility] * 8 + severity;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const two = (n: number) => String(n).padStart(2, '0');

/** `Dec  4 09:20:14`: syslog's classic timestamp, in the host's local time zone. */
export function syslogTime(date: Date): string {
  return `${MONTHS[date.getMonth()]} ${String(date.getDate()).padStart(2, ' ')} ${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}

/** Longest sentence sent; syslog daemons cut longer messages anyway (rsyslog at 8 KB). */
export const MAX_SENTENCE = 2000;

/** Where a hook's decision happened, as an SMTP person says it. */
const PLACE: Record<string, string> = {
  connect: 'connect',
  helo: 'HELO',
  auth: 'AUTH',
  mail: 'MAIL',
  rcpt: 'RCPT',
  data: 'DATA',
  queue: 'queueing',
  deliver: 'delivery',
  verify: 'verify',
};

/** Hooks whose decisions belong to a mail transaction: their lines name its sender and recipients. */
const TRANSACTION_HOOKS = new Set(['mail', 'rcpt', 'data', 'queue']);

interface Envelope {
  from: string | undefined;
  readonly to: string[];
}

/** Open transactions remembered at most (a connection's is dropped at its close). */
const MAX_OPEN = 10_000;

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined);
const list = (v: unknown): string[] | undefined => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : undefined);
const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** An error as pino writes it (`{ type, message, stack }`) or as a string. */
function errorText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { message?: unknown }).message === 'string') return (v as { message: string }).message;
  return undefined;
}

/** Addresses as `<a@example.org>,<b@example.jp>`, the first few, then how many more. */
function addresses(list: readonly string[], shown = 3): string {
  const head = list.slice(0, shown).map((a) => `<${a}>`);
  return list.length > shown ? `${head.join(',')} and ${list.length - shown} more` : head.join(',');
}

/** One line: no line breaks or other control characters, at most MAX_SENTENCE characters. */
export function oneLine(text: string): string {
  const flat = text.replace(/ *[\x00-\x1f\x7f]+ */g, ' ').trim();
  return flat.length > MAX_SENTENCE ? `${flat.slice(0, MAX_SENTENCE - 1)}…` : flat;
}

export class SyslogFormatter {
  /** Open SMTP transactions by listener and connection. */
  private readonly open = new Map<string, Envelope>();

  /** The sentence for one record, or undefined for a line that only repeats the one before it. */
  format(rec: LogRecord): string | undefined {
    // Before tracking: a `queued` line still names the recipients its transaction took.
    const text = this.sentence(rec);
    this.track(rec);
    return text === undefined ? undefined : oneLine(this.prefix(rec) + text);
  }

  /** How many transactions are remembered (tests). */
  get openTransactions(): number {
    return this.open.size;
  }

  private key(rec: LogRecord): string | undefined {
    const conn = str(rec.conn);
    return conn === undefined ? undefined : `${str(rec.listener) ?? ''}/${conn}`;
  }

  /** Remembers each transaction's sender and accepted recipients; forgets it when queued or the connection closes. */
  private track(rec: LogRecord): void {
    const key = this.key(rec);
    if (key === undefined) return;
    if (rec.event === 'close' || rec.event === 'queued') {
      this.open.delete(key);
      return;
    }
    if (rec.hook === 'mail' && rec.event === undefined) {
      this.open.delete(key);
      if (rec.action !== 'accept') return;
      if (this.open.size >= MAX_OPEN) this.open.delete(this.open.keys().next().value!);
      this.open.set(key, { from: str(rec.from), to: [] });
      return;
    }
    const rcpt = str(rec.rcpt);
    if (rec.hook === 'rcpt' && rec.action === 'accept' && rcpt !== undefined) {
      const env = this.open.get(key);
      if (env && !env.to.includes(rcpt)) env.to.push(rcpt);
    }
  }

  private prefix(rec: LogRecord): string {
    const listener = str(rec.listener);
    const conn = str(rec.conn);
    const component = str(rec.component);
    if (listener) return conn ? `${listener}[${conn}]: ` : `${listener}: `;
    if (component) return `${component}: `;
    const plugin = str(rec.plugin);
    if (plugin && rec.hook === undefined) return conn ? `${plugin}[${conn}]: ` : `${plugin}: `;
    return '';
  }

  private sentence(rec: LogRecord): string | undefined {
    switch (rec.event) {
      case 'connect':
        return this.connect(rec);
      case 'close':
        return this.close(rec);
      case 'queued':
        return this.queued(rec);
      case 'login':
        return this.login(rec);
      case 'auth':
        // The AUTH decision line just before it says the same.
        return rec.listener !== undefined && rec.conn !== undefined ? undefined : this.fallback(rec);
      case 'quit':
        return this.quit(rec);
      case 'delivery':
        return this.delivery(rec);
      case 'bounce':
      case 'delay-notice':
        return this.bounce(rec);
      case 'forward':
        return this.forward(rec);
      case 'listen':
        return this.listen(rec);
      case 'queue-end':
        return str(rec.id) ? `message ${str(rec.id)} finished, removed from the queue` : this.fallback(rec);
      case undefined:
        if (typeof rec.hook === 'string' && typeof rec.action === 'string') return this.decision(rec);
    }
    return this.fallback(rec);
  }

  private connect(rec: LogRecord): string {
    const ip = str(rec.ip) ?? 'unknown';
    const port = str(rec.port);
    const local = str(rec.local);
    return `connection from ${ip}${port ? ` port ${port}` : ''}${local ? ` to ${local}` : ''}${rec.secure === true ? ' over TLS' : ''}`;
  }

  private listen(rec: LogRecord): string {
    const address = str(rec.address);
    const port = str(rec.port);
    if (address === undefined || port === undefined) return this.fallback(rec);
    const tls = str(rec.tls);
    return `listening on ${address.includes(':') ? `[${address}]` : address}:${port} (${[str(rec.protocol), tls && tls !== 'none' ? `tls ${tls}` : undefined].filter(Boolean).join(', ')})`;
  }

  private close(rec: LogRecord): string {
    const ip = str(rec.ip) ?? 'unknown';
    const user = str(rec.user);
    const notes = [user ? `user ${user}` : undefined, rec.update === true ? 'mailbox updated' : undefined].filter(Boolean);
    const err = errorText(rec.err);
    return `connection from ${ip} closed${notes.length ? ` (${notes.join(', ')})` : ''}${err ? `: ${err}` : ''}`;
  }

  private queued(rec: LogRecord): string {
    const ip = str(rec.ip);
    const id = str(rec.id) ?? '?';
    const key = this.key(rec);
    const from = str(rec.from);
    const to = list(rec.to) ?? (key === undefined ? undefined : this.open.get(key)?.to);
    const size = str(rec.size);
    const count = typeof rec.rcpts === 'number' ? rec.rcpts : to?.length;
    const parts = [from !== undefined ? `from=<${from}>` : undefined, to?.length ? `to=${addresses(to)}` : count !== undefined ? plural(count, 'recipient') : undefined, size ? `${size} bytes` : undefined].filter(Boolean);
    return `${ip ? `${ip} ` : ''}message ${id} queued${parts.length ? `: ${parts.join(', ')}` : ''}`;
  }

  /** `451 4.7.1 listed in ...`, the parts there are. */
  private reply(rec: LogRecord): string {
    const reason = str(rec.reason);
    return [str(rec.code), str(rec.enhanced), reason].filter((x) => x !== undefined && x !== '').join(' ');
  }

  /** ` (from=<a> to=<b>)` for decisions in a mail transaction. */
  private envelope(rec: LogRecord): string {
    if (!TRANSACTION_HOOKS.has(str(rec.hook) ?? '')) return '';
    const key = this.key(rec);
    const open = key === undefined ? undefined : this.open.get(key);
    const from = str(rec.from) ?? open?.from;
    const rcpt = str(rec.rcpt);
    const to = rcpt !== undefined ? [rcpt] : (list(rec.to) ?? (rec.hook === 'mail' ? [] : (open?.to ?? [])));
    const parts = [from !== undefined ? `from=<${from}>` : undefined, to.length ? `to=${addresses(to)}` : undefined].filter(Boolean);
    return parts.length ? ` (${parts.join(' ')})` : '';
  }

  private decision(rec: LogRecord): string {
    const hook = str(rec.hook)!;
    const action = str(rec.action)!;
    const plugin = str(rec.plugin);
    const by = plugin && plugin !== 'core' ? ` by ${plugin}` : '';
    const ip = str(rec.ip);
    const id = str(rec.id);
    // A session's client, or the message a delivery decision is about.
    const who = ip ?? (id ? `message ${id}` : '');
    const subject = who ? `${who} ` : '';
    const place = PLACE[hook] ?? hook;
    const reply = this.reply(rec);
    const user = str(rec.user);
    const method = str(rec.method);
    if (hook === 'auth' && user !== undefined && (action === 'reject' || action === 'defer')) {
      return `login failed for ${user}${ip ? ` from ${ip}` : ''}${method ? ` (${method})` : ''}${by}${reply ? `: ${reply}` : ''}`;
    }
    if (action === 'accept') {
      if (hook === 'auth' && user !== undefined) return `${subject}logged in as ${user}${method ? ` (${method})` : ''}${by}`;
      if (hook === 'mail') {
        const from = str(rec.from);
        return `${subject}sender ${from !== undefined ? `<${from}> ` : ''}accepted${by}${id ? ` (message ${id})` : ''}`;
      }
      if (hook === 'rcpt' && str(rec.rcpt) !== undefined) {
        const reason = str(rec.reason);
        return `${subject}recipient <${str(rec.rcpt)}> accepted${by}${reason && reason !== 'OK' ? `: ${reason}` : ''}`;
      }
      return `${subject}accepted at ${place}${by}${reply ? `: ${reply}` : ''}${this.envelope(rec)}`;
    }
    // In a session the client is refused; in the queue a delivery is put off or given up.
    const refused = hook === 'deliver' ? (action === 'defer' ? 'deferred' : 'rejected') : 'refused';
    const verb = action === 'reject' || action === 'defer' ? refused : action === 'disconnect' ? 'disconnected' : action === 'discard' ? 'discarded' : action;
    const extra = hook === 'auth' && user !== undefined ? ` (user ${user})` : '';
    return `${subject}${verb} at ${place}${by}${reply ? `: ${reply}` : ''}${this.envelope(rec)}${extra}`;
  }

  private login(rec: LogRecord): string {
    const user = str(rec.user) ?? '(unknown)';
    const ip = str(rec.ip);
    const method = str(rec.method);
    const plugin = str(rec.plugin);
    const by = plugin && plugin !== 'core' ? ` by ${plugin}` : '';
    if (rec.result === 'ok') {
      const messages = typeof rec.messages === 'number' ? rec.messages : undefined;
      const octets = str(rec.octets);
      const box = messages !== undefined ? `: ${plural(messages, 'message')}${octets ? ` (${octets} octets)` : ''}` : '';
      return `${user} logged in${ip ? ` from ${ip}` : ''}${method ? ` (${method})` : ''}${by}${box}`;
    }
    const reply = this.reply(rec);
    return `login failed for ${user}${ip ? ` from ${ip}` : ''}${method ? ` (${method})` : ''}${by}${reply ? `: ${reply}` : ''}`;
  }

  private quit(rec: LogRecord): string {
    const user = str(rec.user);
    const ip = str(rec.ip);
    const n = (k: string) => (typeof rec[k] === 'number' ? (rec[k] as number) : 0);
    const failed = n('failed') ? `, ${n('failed')} could not be deleted` : '';
    return `${user ?? 'client'}${ip ? ` from ${ip}` : ''} quit: ${n('retrieved')} retrieved, ${n('deleted')} deleted${failed}, ${n('left')} left`;
  }

  private delivery(rec: LogRecord): string {
    const id = str(rec.id) ?? '?';
    const rcpt = str(rec.rcpt) ?? '?';
    const text = str(rec.text) ?? '';
    const attempt = typeof rec.attempt === 'number' && rec.attempt > 1 ? ` (attempt ${rec.attempt})` : '';
    const head = `message ${id} to ${rcpt}`;
    switch (rec.result) {
      case 'success':
        return `${head} delivered${attempt}: ${text}`;
      case 'deferral': {
        const next = typeof rec.next === 'string' ? new Date(rec.next) : undefined;
        const when = next && !Number.isNaN(next.getTime()) ? `; next attempt ${syslogTime(next)}` : '';
        return `${head} deferred${attempt}: ${text}${when}`;
      }
      case 'failure':
        return `${head} failed${attempt}: ${text}`;
    }
    return this.fallback(rec);
  }

  private bounce(rec: LogRecord): string {
    const id = str(rec.id) ?? '?';
    const rcpts = list(rec.rcpts) ?? [];
    if (rec.result === 'discarded') return `message ${id}: the double bounce for ${rcpts.join(', ') || 'its recipients'} could not be delivered either; discarded`;
    const kind = rec.event === 'delay-notice' ? 'delay notice' : /^double bounce/.test(str(rec.msg) ?? '') ? 'double bounce' : 'bounce';
    const to = str(rec.to);
    const as = str(rec.bounceId);
    return `message ${id}: ${kind}${rcpts.length ? ` for ${rcpts.join(', ')}` : ''} sent${to !== undefined ? ` to <${to}>` : ''}${as ? ` as ${as}` : ''}`;
  }

  private forward(rec: LogRecord): string {
    const to = list(rec.to) ?? [];
    const as = str(rec.forwardId);
    return `message ${str(rec.id) ?? '?'} forwarded to ${to.join(', ') || '?'}${as ? ` as ${as}` : ''}`;
  }

  /** `msg`, then the key fields it does not already say. */
  private fallback(rec: LogRecord): string {
    let msg = str(rec.msg) ?? '';
    // `queue: 0 messages recovered` under the `queue: ` prefix: said once.
    for (const p of [str(rec.component), rec.hook === undefined ? str(rec.plugin) : undefined]) {
      if (p && msg.startsWith(`${p}: `)) msg = msg.slice(p.length + 2);
    }
    const fields: string[] = [];
    const add = (label: string, value: string | undefined, shown = value) => {
      if (value !== undefined && value !== '' && !msg.includes(value)) fields.push(`${label}=${shown}`);
    };
    const ip = str(rec.ip);
    const inSession = rec.listener !== undefined && rec.conn !== undefined;
    if (!inSession) add('client', ip);
    add('id', str(rec.id));
    add('user', str(rec.user));
    const from = str(rec.from);
    if (from !== undefined) add('from', from || '<>', `<${from}>`);
    const rcpt = str(rec.rcpt);
    if (rcpt !== undefined) add('to', rcpt, `<${rcpt}>`);
    add('code', str(rec.code));
    add('reason', str(rec.reason));
    add('error', errorText(rec.err));
    const head = inSession && ip ? `${ip}: ${msg}` : msg;
    return fields.length ? `${head} (${fields.join(', ')})` : head || '(empty log line)';
  }
}
