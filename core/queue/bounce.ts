/**
 * Delivery status notifications (RFC 3464): multipart/report with a human
 * part worded like qmail's bounces (what qmail users recognise), a
 * message/delivery-status part a program can read, and the original
 * message's headers. Sent from MAILER-DAEMON with the null sender.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { RecipientState } from './spool.js';
import { rfc5322Date } from '../date.js';

/** Why a report is sent: qmail's bounce and delay warning, and RFC 3461's success notices. */
export type ReportKind = 'failure' | 'delay' | 'success';

/** One recipient in a report, with RFC 3464's Action for it. */
export interface ReportedRecipient extends Pick<RecipientState, 'address' | 'error' | 'dsnStatus' | 'remoteMta' | 'diagnostic' | 'lastAttempt'> {
  readonly action: 'failed' | 'delayed' | 'delivered' | 'relayed';
  /** ORCPT as RFC 3464's Original-Recipient wants it (`rfc822;addr`). */
  readonly originalRecipient?: string;
}

export interface BounceInput {
  readonly hostname: string;
  readonly from: string;
  readonly to: string;
  readonly queueId: string;
  readonly arrival: number;
  readonly now: number;
  readonly kind: ReportKind;
  readonly recipients: readonly ReportedRecipient[];
  /** The original header section (CRLF), or with RET=FULL the whole message as stored. */
  readonly original: { readonly headersOnly: true; readonly text: string } | { readonly headersOnly: false; readonly message: Buffer };
  /** The message bounced was itself a bounce: this notice goes to the postmaster. */
  readonly double: boolean;
  /** The client's ENVID (RFC 3461), decoded. */
  readonly envelopeId?: string;
}

/** Folds long diagnostic text and keeps it to printable ASCII, as a header field needs. */
function field(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, ' ').replace(/\s+/g, ' ').trim();
}

const HELLO = (hostname: string) => `Hi. This is the yubin program at ${hostname}.`;

function introduction(b: BounceInput): { subject: string; intro: string[]; below: string } {
  const below = b.double ? '--- Below this line are the headers of the original bounce.' : b.original.headersOnly ? '--- Below this line are the headers of your message.' : '--- Below this line is a copy of the message.';
  switch (b.kind) {
    case 'delay':
      return {
        subject: 'Delayed Mail (still being retried)',
        intro: [HELLO(b.hostname), 'Your message has not been delivered yet to the following addresses.', 'This is only a warning: I am still trying, and you do not need to send it again.'],
        below,
      };
    case 'success':
      return {
        subject: 'Successful Mail Delivery Report',
        intro: [HELLO(b.hostname), 'Your message was delivered to the following addresses, as you asked to be told.', 'An address marked "relayed" was handed to a server that sends no such reports itself.'],
        below,
      };
    case 'failure':
      return b.double
        ? { subject: 'failure notice (a bounce could not be delivered)', intro: [HELLO(b.hostname), 'I tried to deliver a bounce message to this address, but the bounce bounced!'], below }
        : {
            subject: 'failure notice',
            intro: [HELLO(b.hostname), "I'm afraid I wasn't able to deliver your message to the following addresses.", "This is a permanent error; I've given up. Sorry it didn't work out."],
            below,
          };
  }
}

const DEFAULT_STATUS: Record<ReportedRecipient['action'], string> = { failed: '5.0.0', delayed: '4.0.0', delivered: '2.0.0', relayed: '2.0.0' };

export function buildBounce(b: BounceInput): Buffer {
  const boundary = `${b.queueId}.${randomBytes(6).toString('hex')}/${b.hostname}`;
  const date = rfc5322Date(b.now);
  const { subject, intro, below } = introduction(b);
  const human: string[] = [...intro, ''];
  for (const r of b.recipients) {
    human.push(`<${r.address}>:${r.action === 'relayed' ? ' (relayed)' : ''}`);
    // qmail's format: a blank line inside a reason would end the paragraph.
    const text = r.error ?? (b.kind === 'success' ? (r.diagnostic ?? 'Delivered.') : 'Unknown error');
    human.push(...text.split(/\r?\n/).map((l) => (l.trim() === '' ? '/' : l)));
    human.push('');
  }
  human.push(below);

  const status: string[] = [`Reporting-MTA: dns; ${b.hostname}`, `X-Yubin-Queue-ID: ${b.queueId}`];
  if (b.envelopeId !== undefined) status.push(`Original-Envelope-Id: ${field(b.envelopeId)}`);
  status.push(`Arrival-Date: ${rfc5322Date(b.arrival)}`, '');
  for (const r of b.recipients) {
    if (r.originalRecipient) status.push(`Original-Recipient: ${field(r.originalRecipient)}`);
    status.push(`Final-Recipient: rfc822; ${r.address}`);
    status.push(`Action: ${r.action}`);
    status.push(`Status: ${r.dsnStatus ?? DEFAULT_STATUS[r.action]}`);
    if (r.remoteMta) status.push(`Remote-MTA: dns; ${r.remoteMta}`);
    if (r.diagnostic) status.push(`Diagnostic-Code: smtp; ${field(r.diagnostic)}`);
    if (r.lastAttempt) status.push(`Last-Attempt-Date: ${rfc5322Date(r.lastAttempt)}`);
    status.push('');
  }

  const lines = [
    `From: MAILER-DAEMON <${b.from}>`,
    `To: ${b.to}`,
    `Subject: ${subject}`,
    `Date: ${date}`,
    `Message-ID: <${b.queueId}.${randomBytes(4).toString('hex')}.${b.kind === 'success' ? 'report' : 'bounce'}@${b.hostname}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    'This is a MIME-formatted delivery status notification.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    ...human,
    '',
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    '',
    ...status,
    `--${boundary}`,
    b.original.headersOnly ? 'Content-Type: text/rfc822-headers' : 'Content-Type: message/rfc822',
    '',
  ];
  const head = `${lines.join('\r\n')}\r\n`;
  const tail = `\r\n--${boundary}--\r\n`;
  if (b.original.headersOnly) return Buffer.from(`${head}${b.original.text.replace(/\r?\n$/, '')}\r\n${tail}`);
  // The message's own bytes, whatever their charset; it ends in CRLF as stored.
  const message = b.original.message;
  const endsInCrlf = message.length >= 2 && message[message.length - 2] === 0x0d && message[message.length - 1] === 0x0a;
  return Buffer.concat([Buffer.from(head), message, Buffer.from(endsInCrlf ? tail : `\r\n${tail}`)]);
}

/** Reads a message's header section (up to the blank line), at most `limit` bytes. */
export async function readHeaderSection(stream: Readable, limit = 256 * 1024): Promise<string> {
  let text = '';
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    text += chunk.toString('latin1');
    const end = text.search(/\r?\n\r?\n/);
    if (end >= 0) {
      text = text.slice(0, end);
      break;
    }
    if (text.length > limit) break;
  }
  stream.destroy();
  // Headers are 7-bit by rule; anything else is passed as read (latin1 round-trips the bytes).
  return Buffer.from(text.slice(0, limit), 'latin1').toString('utf8').replace(/\r?\n/g, '\r\n') + '\r\n';
}
