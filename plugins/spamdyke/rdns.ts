/**
 * Reverse-DNS helpers: spamdyke's "IP address and a country code in the rDNS
 * name" test, and the domains an RHSBL is asked about for an rDNS name.
 */
import { isIP } from 'node:net';
import { normalizeIp } from '../../core/index.js';

/**
 * The rDNS name contains the client's IPv4 address (its four octets in order
 * or reversed as separate numbers, zero-padded to 12 digits, or as 8 hex
 * digits) — the shape of a generic end-user name.
 */
export function containsIp(name: string, ip: string): boolean {
  const n = normalizeIp(ip);
  if (isIP(n) !== 4) return false;
  const octets = n.split('.').map(Number);
  const reversed = [...octets].reverse();
  const lower = name.toLowerCase();
  const runs = (lower.match(/\d+/g) ?? []).map((r) => ({ text: r, value: Number(r) }));
  for (const want of [octets, reversed]) {
    for (let i = 0; i + 4 <= runs.length; i++) {
      if (want.every((o, j) => runs[i + j]!.value === o && runs[i + j]!.text.length <= 3)) return true;
    }
    const padded = want.map((o) => String(o).padStart(3, '0')).join('');
    if (runs.some((r) => r.text === padded)) return true;
    const hex = want.map((o) => o.toString(16).padStart(2, '0')).join('');
    if (new RegExp(`(^|[^0-9a-f])${hex}([^0-9a-f]|$)`).test(lower)) return true;
  }
  return false;
}

/** The last label is a two-letter country code. */
export function endsInCountryCode(name: string): boolean {
  const labels = name.toLowerCase().replace(/\.$/, '').split('.');
  return labels.length >= 2 && /^[a-z]{2}$/.test(labels[labels.length - 1]!);
}

/** spamdyke's reject-ip-in-cc-rdns test. */
export function ipInCcRdns(name: string, ip: string): boolean {
  return endsInCountryCode(name) && containsIp(name, ip);
}

/**
 * The domains an RHSBL is asked about for a host name: every parent with at
 * least two labels, nearest first, at most `max` (the name itself is not a
 * domain a list would carry for dynamic hosts, but a listed host is, so it is
 * included first).
 */
export function rhsCandidates(name: string, max = 4): string[] {
  const labels = name.toLowerCase().replace(/\.$/, '').split('.').filter(Boolean);
  const out: string[] = [];
  for (let i = 0; i + 2 <= labels.length; i++) out.push(labels.slice(i).join('.'));
  // The shortest (registered) domains are the ones lists carry: keep those when capping.
  return out.slice(-max);
}
