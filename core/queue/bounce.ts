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

export interface BounceInput {
  readonly hostname: string;
  readonly from: string;
  readonly to: string;
  readonly queueId: string;
  readonly arrival: number;
  readonly now: number;
  readonly failed: readonly RecipientState[];
  /** The original header section (CRLF). */
  readonly originalHeaders: string;
  /** The message bounced was itself a bounce: this notice goes to the postmaster. */
  readonly double: boolean;
  /** A delay notice rather than a failure. */
  readonly delayed?: boolean;
}

/** Folds long diagnostic text and keeps it to printable ASCII, as a header field needs. */
function field(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, ' ').replace(/\s+/g, ' ').trim();
}

export function buildBounce(b: BounceInput): Buffer {
  const boundary = `${b.queueId}.${randomBytes(6).toString('hex')}/${b.hostname}`;
  const date = rfc5322Date(b.now);
  const subject = b.delayed ? 'Delayed Mail (still being retried)' : b.double ? 'failure notice (a bounce could not be delivered)' : 'failure notice';
  const intro = b.delayed
    ? [
        `Hi. This is the yubin program at ${b.hostname}.`,
        `Your message has not been delivered yet to the following addresses.`,
        `This is only a warning: I am still trying, and you do not need to send it again.`,
      ]
    : b.double
      ? [`Hi. This is the yubin program at ${b.hostname}.`, `I tried to deliver a bounce message to this address, but the bounce bounced!`]
      : [
          `Hi. This is the yubin program at ${b.hostname}.`,
          `I'm afraid I wasn't able to deliver your message to the following addresses.`,
          `This is a permanent error; I've given up. Sorry it didn't work out.`,
        ];
  const human: string[] = [...intro, ''];
  for (const r of b.failed) {
    human.push(`<${r.address}>:`);
    // qmail's format: a blank line inside a reason would end the paragraph.
    human.push(...(r.error ?? 'Unknown error').split(/\r?\n/).map((l) => (l.trim() === '' ? '/' : l)));
    human.push('');
  }
  human.push(b.double ? '--- Below this line are the headers of the original bounce.' : '--- Below this line are the headers of your message.');

  const status: string[] = [`Reporting-MTA: dns; ${b.hostname}`, `X-Yubin-Queue-ID: ${b.queueId}`, `Arrival-Date: ${rfc5322Date(b.arrival)}`, ''];
  for (const r of b.failed) {
    status.push(`Final-Recipient: rfc822; ${r.address}`);
    status.push(`Action: ${b.delayed ? 'delayed' : 'failed'}`);
    status.push(`Status: ${r.dsnStatus ?? (b.delayed ? '4.0.0' : '5.0.0')}`);
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
    `Message-ID: <${b.queueId}.${randomBytes(4).toString('hex')}.bounce@${b.hostname}>`,
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
    'Content-Type: text/rfc822-headers',
    '',
  ];
  const headers = b.originalHeaders.replace(/\r?\n$/, '');
  return Buffer.from(`${lines.join('\r\n')}\r\n${headers}\r\n\r\n--${boundary}--\r\n`);
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
