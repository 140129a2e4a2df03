/**
 * `yubin sendmail`: the sendmail command line that cron, PHP's mail() and
 * scripts expect, injecting into the same spool with the same durability as
 * SMTP (qmail's sendmail wrapper + qmail-inject). The running server is told
 * over its control socket; if none runs, the next start delivers.
 *
 * Exit codes follow sendmail's sysexits: 64 usage, 65 bad message, 75
 * temporary failure (the spool could not be written), 78 config.
 */
import os from 'node:os';
import path from 'node:path';
import addressparser from 'nodemailer/lib/addressparser';
import { limitsSchema, mailListeners, type Config } from './config/schema.js';
import { controlRequest } from './queue/control.js';
import { Spool } from './queue/spool.js';
import { rfc5322Date } from './date.js';

export const EX_USAGE = 64;
export const EX_DATAERR = 65;
export const EX_TEMPFAIL = 75;
export const EX_CONFIG = 78;

export class SendmailError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

export interface SendmailArgs {
  /** -t: recipients from To, Cc and Bcc, added to those on the command line. */
  readonly extractRecipients: boolean;
  /** -i / -oi: a line with a single dot does not end the message. */
  readonly ignoreDots: boolean;
  /** -f / -r: envelope sender; '' for the null sender. */
  readonly sender: string | undefined;
  /** -F: full name for a From: header the message lacks. */
  readonly fullName: string | undefined;
  readonly config: string | undefined;
  readonly recipients: readonly string[];
}

/** Options sendmail programs pass that change nothing here (delivery mode, error mode, body type, verbosity). */
const IGNORED = /^-(o[A-Za-z].*|B.+|bm|v|m|e[a-z]|d[a-z]*|U)$/;

export function parseSendmailArgs(argv: readonly string[]): SendmailArgs {
  let extractRecipients = false;
  let ignoreDots = false;
  let sender: string | undefined;
  let fullName: string | undefined;
  let config: string | undefined;
  const recipients: string[] = [];
  const value = (i: number, flag: string): string => {
    const v = argv[i];
    if (v === undefined) throw new SendmailError(`option ${flag} needs a value`, EX_USAGE);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      recipients.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      recipients.push(a);
      continue;
    }
    if (a === '-t') extractRecipients = true;
    else if (a === '-i' || a === '-oi') ignoreDots = true;
    else if (a === '-f' || a === '-r') sender = value(++i, a);
    else if (a.startsWith('-f') || a.startsWith('-r')) sender = a.slice(2);
    else if (a === '-F') fullName = value(++i, a);
    else if (a.startsWith('-F')) fullName = a.slice(2);
    else if (a === '-C' || a === '--config') config = value(++i, a);
    else if (a === '-N') value(++i, a);
    else if (a.startsWith('-N') || IGNORED.test(a)) continue;
    else throw new SendmailError(`unsupported option ${a} (supported: -t -i -oi -f -r -F -C; -o*, -B*, -N, -v ignored)`, EX_USAGE);
  }
  if (sender !== undefined) sender = sender.replace(/^<(.*)>$/, '$1').trim();
  return { extractRecipients, ignoreDots, sender, fullName, config, recipients };
}

interface HeaderLine {
  readonly name: string;
  /** The whole field, continuation lines included, without the final line end. */
  readonly raw: string;
}

const HEADER = /^([!-9;-~]+):/;

/** Splits LF or CRLF text into a header section and a body, the way qmail-inject reads a message. */
function splitMessage(lines: string[]): { headers: HeaderLine[]; body: string[] } {
  const headers: HeaderLine[] = [];
  let i = 0;
  for (; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '') {
      i++;
      break;
    }
    if (/^[ \t]/.test(line) && headers.length) {
      const last = headers.pop()!;
      headers.push({ name: last.name, raw: `${last.raw}\r\n${line}` });
      continue;
    }
    const m = HEADER.exec(line);
    if (!m) break; // not a header: the body starts here
    headers.push({ name: m[1]!.toLowerCase(), raw: line });
  }
  return { headers, body: lines.slice(i) };
}

function addressesIn(headers: readonly HeaderLine[], names: readonly string[]): string[] {
  const out: string[] = [];
  type Parsed = { address?: string; name?: string; group?: Parsed[] };
  const flatten = (list: Parsed[]): void => {
    for (const a of list) {
      if (a.group) flatten(a.group);
      else if (a.address) out.push(a.address);
      // A bare local name (`To: root`) parses as a display name; qmail-inject qualifies it like an address.
      else if (a.name && /^[^\s@<>()",;:]+$/.test(a.name)) out.push(a.name);
    }
  };
  for (const h of headers) {
    if (!names.includes(h.name)) continue;
    flatten(addressparser(h.raw.slice(h.raw.indexOf(':') + 1).replace(/\r\n/g, ' ')) as Parsed[]);
  }
  return out;
}

export interface Injected {
  readonly id: string;
  readonly recipients: readonly string[];
  readonly notified: boolean;
}

export async function sendmail(config: Config, args: SendmailArgs, input: Buffer): Promise<Injected> {
  const sizes = mailListeners(config).map((l) => l.limits.maxMessageSize);
  const limit = sizes.length ? Math.max(...sizes) : limitsSchema.parse({}).maxMessageSize; // http listeners only: the default
  if (input.length > limit) throw new SendmailError(`message is ${input.length} bytes, larger than the ${limit} bytes the listeners take`, EX_DATAERR);
  const user = os.userInfo().username;
  const defaultDomain = config.localDomains.includes(config.hostname) ? config.hostname : (config.localDomains[0] ?? config.hostname);
  const qualify = (a: string) => (a.includes('@') ? a : `${a}@${defaultDomain}`);

  let lines = input.toString('utf8').split(/\r?\n/);
  if (lines.at(-1) === '') lines.pop();
  if (!args.ignoreDots) {
    const dot = lines.indexOf('.');
    if (dot >= 0) lines = lines.slice(0, dot);
  }
  const { headers, body } = splitMessage(lines);

  const recipients = [...args.recipients, ...(args.extractRecipients ? addressesIn(headers, ['to', 'cc', 'bcc']) : [])].map((r) => qualify(r.trim())).filter(Boolean);
  const unique = [...new Map(recipients.map((r) => [r.toLowerCase(), r])).values()];
  if (!unique.length) throw new SendmailError('no recipients: name them as arguments or use -t with To/Cc/Bcc headers', EX_DATAERR);
  for (const r of unique) {
    if (!/^[^@\s<>()]+@[^@\s<>()]+$/.test(r)) throw new SendmailError(`bad recipient address ${JSON.stringify(r)}`, EX_DATAERR);
  }
  const sender = args.sender === undefined ? qualify(user) : args.sender === '' ? '' : qualify(args.sender);
  if (sender && !/^[^@\s<>()]+@[^@\s<>()]+$/.test(sender)) throw new SendmailError(`bad sender address ${JSON.stringify(sender)}`, EX_DATAERR);

  const now = Date.now();
  const spool = new Spool(path.join(config.dataDir, 'queue'));
  // Bcc is for the envelope only; qmail-inject and Postfix drop it too.
  const kept = headers.filter((h) => h.name !== 'bcc').map((h) => h.raw);
  const has = (name: string) => headers.some((h) => h.name === name);
  const added: string[] = [];
  if (!has('from')) {
    const from = sender || qualify(user);
    added.push(`From: ${args.fullName ? `"${args.fullName.replace(/["\\\r\n]/g, '')}" <${from}>` : from}`);
  }
  if (!has('date')) added.push(`Date: ${rfc5322Date(now)}`);
  if (!has('message-id')) added.push(`Message-ID: <${spool.newId()}.sendmail@${config.hostname}>`);
  const text = [...kept, ...added, '', ...body].join('\r\n') + '\r\n';

  try {
    await spool.init(false);
    const id = await spool.inject(Buffer.from(text, 'utf8'), {
      sender,
      senderParams: {},
      recipients: unique.map((address) => ({ address, params: {} })),
      received: now,
      listener: 'sendmail',
      remoteIp: '127.0.0.1',
      heloName: undefined,
      authUser: user,
      prependHeaders: `Received: (yubin sendmail invoked by uid ${process.getuid?.() ?? 0}); ${rfc5322Date(now)}\r\n`,
    });
    const res = await controlRequest(config.dataDir, { cmd: 'notify', id }).catch(() => undefined);
    return { id, recipients: unique, notified: Boolean(res?.ok) };
  } catch (err) {
    throw new SendmailError(`cannot write to the queue in ${spool.dir}: ${(err as Error).message}`, EX_TEMPFAIL);
  }
}
