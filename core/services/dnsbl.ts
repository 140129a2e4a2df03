/**
 * DNS blacklist queries (RFC 5782) over the core DNS service. Every answer
 * is one of three: listed (with the returned 127.0.0.x codes and, when
 * asked, the TXT text), not listed (NXDOMAIN or no A record), or failed —
 * never a failure passed off as "not listed", which is what the npm `dnsbl`
 * package does.
 */
import { isIP } from 'node:net';
import { normalizeIp } from '../ip.js';
import type { Dns } from './dns.js';
import type { AbortOptions } from '../abort.js';

/** Options of a DNSBL query; `signal` abandons it (it then settles as `failed`, error 'aborted'). */
export interface DnsblOptions extends AbortOptions {
  /** Also fetch the TXT record of a listing. */
  readonly txt?: boolean;
}

export type DnsblResult =
  | { readonly kind: 'listed'; readonly zone: string; readonly query: string; readonly codes: readonly string[]; readonly txt: string | undefined }
  | { readonly kind: 'unlisted'; readonly zone: string; readonly query: string }
  | { readonly kind: 'failed'; readonly zone: string; readonly query: string; readonly error: string };

/** `192.0.2.1` → `1.2.0.192`; IPv6 as 32 reversed nibbles (`...8.b.d.0.1.0.0.2`). */
export function reverseIp(ip: string): string {
  const n = normalizeIp(ip);
  if (isIP(n) === 4) return n.split('.').reverse().join('.');
  if (isIP(n) !== 6) throw new Error(`not an IP address: ${ip}`);
  // Expand :: and each group to four hex digits, then reverse the nibbles.
  const [head = '', tail = ''] = n.includes('::') ? n.split('::') : [n, ''];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t].map((g) => g.padStart(4, '0'));
  return groups.join('').split('').reverse().join('.');
}

async function query(dns: Pick<Dns, 'a' | 'txt'>, zone: string, name: string, withTxt: boolean, signal: AbortSignal | undefined): Promise<DnsblResult> {
  const a = await dns.a(name, { signal });
  if (a.kind === 'failed') return { kind: 'failed', zone, query: name, error: a.error };
  if (a.kind === 'none') return { kind: 'unlisted', zone, query: name };
  let txt: string | undefined;
  if (withTxt) {
    const t = await dns.txt(name, { signal });
    // A listing without its text is still a listing: the caller falls back to its own words.
    if (t.kind === 'found') txt = t.records.join(' ');
  }
  return { kind: 'listed', zone, query: name, codes: a.records, txt };
}

/** Is this client IP listed in the zone? */
export function lookupDnsbl(dns: Pick<Dns, 'a' | 'txt'>, zone: string, ip: string, options: DnsblOptions = {}): Promise<DnsblResult> {
  return query(dns, zone, `${reverseIp(ip)}.${zone}`, options.txt ?? false, options.signal);
}

/** Is this domain (an rDNS name, a sender's domain) listed in the right-hand-side zone? */
export function lookupRhsbl(dns: Pick<Dns, 'a' | 'txt'>, zone: string, domain: string, options: DnsblOptions = {}): Promise<DnsblResult> {
  return query(dns, zone, `${domain.toLowerCase().replace(/\.$/, '')}.${zone}`, options.txt ?? false, options.signal);
}
