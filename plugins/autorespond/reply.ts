/**
 * The automatic reply, as RFC 3834 section 3 describes it: from the user to
 * the envelope sender, `Auto-Submitted: auto-replied`, the subject `Auto: `
 * and the original's unless the user chose one, threaded under the original
 * with In-Reply-To and References. nodemailer's MailComposer does the MIME
 * (RFC 2047 words for a non-ASCII subject, quoted-printable text, folding).
 */
import { randomBytes } from 'node:crypto';
import MailComposer from 'nodemailer/lib/mail-composer';
import { headerValues, type HeaderField } from './rules.js';

export interface ReplyInput {
  /** The user on vacation. */
  readonly from: string;
  /** The envelope sender of the original. */
  readonly to: string;
  /** The user's subject; undefined: `Auto: ` and the original's. */
  readonly subject: string | undefined;
  readonly body: string;
  /** The original's header fields. */
  readonly original: readonly HeaderField[];
  /** For the reply's Message-ID. */
  readonly hostname: string;
  readonly now: number;
}

/** The first `<...>` message id in a field's value. */
function messageId(value: string | undefined): string | undefined {
  return value === undefined ? undefined : /<[^<>\s]+>/.exec(value)?.[0];
}

/** Subject of the reply: the chosen one, or RFC 3834's `Auto: ` + the original's (encoded words kept as they are). */
export function replySubject(chosen: string | undefined, original: readonly HeaderField[]): string {
  if (chosen) return chosen;
  const subject = headerValues(original, 'subject')[0]?.trim();
  return `Auto: ${subject || '(no subject)'}`;
}

export async function buildReply(r: ReplyInput): Promise<Buffer> {
  const id = messageId(headerValues(r.original, 'message-id')[0]);
  // References: the original's, then the original itself (RFC 5322 3.6.4), kept to a sane length.
  const refs = id ? [...(headerValues(r.original, 'references')[0]?.match(/<[^<>\s]+>/g) ?? []).slice(-20), id] : [];
  const composer = new MailComposer({
    from: r.from,
    to: r.to,
    subject: replySubject(r.subject, r.original),
    text: r.body,
    date: new Date(r.now),
    messageId: `<${r.now.toString(36)}.${randomBytes(6).toString('hex')}.autorespond@${r.hostname}>`,
    ...(id ? { inReplyTo: id, references: refs } : {}),
    headers: { 'Auto-Submitted': 'auto-replied', 'X-Auto-Response-Suppress': 'All' },
    textEncoding: 'quoted-printable',
  });
  // CRLF throughout, as a message on the wire (the composer leaves a 7bit body's LFs as given).
  const built = await composer.compile().build();
  return Buffer.from(built.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
}
