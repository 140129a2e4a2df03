/** The trace header every hop adds (RFC 5321 section 4.4). */
import { rfc5322Date } from '../date.js';

/** Client-supplied text in a header comment: printable ASCII only, no comment delimiters. */
function safe(text: string): string {
  return text.replace(/[^\x21-\x7e]|[()\\]/g, '?').slice(0, 255);
}

export interface ReceivedInfo {
  readonly heloName: string | undefined;
  readonly remoteHost: string | undefined;
  readonly remoteIp: string;
  readonly hostname: string;
  /** SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA (RFC 3848). */
  readonly protocol: string;
  readonly id: string;
  /** Named only when there is exactly one, so a Bcc list is not disclosed. */
  readonly recipients: readonly string[];
  readonly time: number;
}

export function receivedHeader(r: ReceivedInfo): string {
  const ip = r.remoteIp.includes(':') ? `IPv6:${r.remoteIp}` : r.remoteIp;
  const from = `from ${safe(r.heloName ?? 'unknown')} (${r.remoteHost ? safe(r.remoteHost) + ' ' : ''}[${ip}])`;
  const forClause = r.recipients.length === 1 ? `\r\n\tfor <${safe(r.recipients[0]!)}>` : '';
  return `Received: ${from}\r\n\tby ${r.hostname} (yubin) with ${r.protocol} id ${r.id}${forClause};\r\n\t${rfc5322Date(r.time)}\r\n`;
}
