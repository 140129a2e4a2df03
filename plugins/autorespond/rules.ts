/**
 * Whether a message may be answered automatically, after RFC 3834 section 2
 * and what vacation(1) and qmail's autorespond learnt: never the null
 * sender, never a mailer daemon, a list or its owner, never a message that
 * says it is bulk, list or automatic mail, never spam, never ourselves.
 */

/** A header field as read: the name as written, the value unfolded and trimmed. */
export interface HeaderField {
  readonly name: string;
  readonly value: string;
}

/** Header fields of a header section (CRLF or LF lines), continuation lines unfolded. */
export function parseHeaderSection(text: string): HeaderField[] {
  const out: HeaderField[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line === '') break;
    if (/^[ \t]/.test(line)) {
      const last = out.pop();
      if (last) out.push({ name: last.name, value: `${last.value} ${line.trim()}`.trim() });
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    out.push({ name: line.slice(0, colon).trim(), value: line.slice(colon + 1).trim() });
  }
  return out;
}

/** Values of every field with this name (case-insensitive), in order. */
export function headerValues(headers: readonly HeaderField[], name: string): string[] {
  const n = name.toLowerCase();
  return headers.filter((h) => h.name.toLowerCase() === n).map((h) => h.value);
}

/** Local parts that are machines or lists, never a person on the other end. */
const MACHINE_NAMES = new Set([
  'mailer-daemon',
  'mailer',
  'postmaster',
  'hostmaster',
  'abuse',
  'listserv',
  'majordomo',
  'mailman',
  'ezmlm',
  'uucp',
  'noreply',
  'no-reply',
  'donotreply',
  'do-not-reply',
  'bounce',
  'bounces',
]);

/**
 * Why this envelope sender looks automatic (a daemon, a list, a list's
 * owner or bounce address), or undefined for what may be a person.
 * Matched on the local part, with a `+extension` (VERP) taken off first.
 */
export function automaticSender(address: string): string | undefined {
  const at = address.lastIndexOf('@');
  const local = (at < 0 ? address : address.slice(0, at)).toLowerCase();
  const base = local.split('+')[0]!;
  if (MACHINE_NAMES.has(base)) return `sender ${base}@ is a mailer, not a person`;
  if (base.startsWith('owner-')) return 'sender is a list owner (owner-*)';
  if (base.endsWith('-request')) return 'sender is a list address (*-request)';
  if (base.endsWith('-owner')) return 'sender is a list owner (*-owner)';
  if (base.endsWith('-bounces') || base.startsWith('bounce-') || base.startsWith('bounces-')) return 'sender is a bounce address';
  // ezmlm's VERP return path: list-return-123-user=host@
  if (/-return-\d/.test(base)) return 'sender is a list return path (*-return-N-*)';
  return undefined;
}

export type Verdict = { readonly reply: true } | { readonly reply: false; readonly reason: string };

export interface ReplyQuestion {
  /** The envelope sender: '' for the null sender. */
  readonly sender: string;
  /** The recipient whose vacation it is. */
  readonly recipient: string;
  readonly headers: readonly HeaderField[];
}

const no = (reason: string): Verdict => ({ reply: false, reason });

/** Should this message get an automatic reply? The first reason it should not, or yes. */
export function shouldReply({ sender, recipient, headers }: ReplyQuestion): Verdict {
  if (!sender) return no('null sender <>');
  if (!/^[^@\s<>()]+@[^@\s<>()]+$/.test(sender)) return no(`sender <${sender}> is not an address to answer`);
  if (sender.toLowerCase() === recipient.toLowerCase()) return no('sender is the recipient');
  const machine = automaticSender(sender);
  if (machine) return no(machine);
  for (const h of headers) {
    const name = h.name.toLowerCase();
    const value = h.value.trim();
    if (name === 'auto-submitted') {
      // RFC 3834: anything but "no" (auto-replied, auto-generated, auto-notified, ...) is automatic.
      const kind = value.split(/[\s;(]/, 1)[0]!.toLowerCase();
      if (kind !== 'no') return no(`Auto-Submitted: ${value || '(empty)'}`);
    } else if (name === 'precedence') {
      if (/^(bulk|list|junk)\b/i.test(value)) return no(`Precedence: ${value}`);
    } else if (name.startsWith('list-')) {
      return no(`${h.name} header: list mail`);
    } else if (name === 'mailing-list' || name === 'x-mailing-list') {
      // ezmlm and older list managers say so this way.
      return no(`${h.name} header: list mail`);
    } else if (name === 'x-spam-flag') {
      if (/^yes\b/i.test(value)) return no('X-Spam-Flag: YES');
    } else if (name === 'x-auto-response-suppress') {
      // Microsoft's: All, OOF (out of office) or AutoReply asks for no reply.
      if (/\b(all|oof|autoreply)\b/i.test(value)) return no(`X-Auto-Response-Suppress: ${value}`);
    } else if (name === 'x-autoreply' || name === 'x-autorespond') {
      return no(`${h.name} header: an automatic reply`);
    }
  }
  return { reply: true };
}
