/**
 * spamdyke's list file formats. One entry per line, `#` comments, blank lines
 * skipped, only the first 65 536 lines read (as spamdyke does).
 *
 * - IP files: exact addresses (`11.22.33.44`, IPv6 too), prefixes (`11.22.33`
 *   or `11.22.33.`), octet ranges (`11.22.33-44.55`, `11.22.33-44`), CIDR
 *   (`11.22.33.0/24`, IPv6 `2001:db8::/32`) and dotted masks
 *   (`11.22.33.0/255.255.255.0`).
 * - rDNS files: exact names and `.domain` (the domain and every name under it).
 * - sender / recipient files: addresses, and `@domain` (the domain and its
 *   subdomains).
 */
import { BlockList, isIP } from 'node:net';
import { normalizeIp } from '../../core/index.js';

export const MAX_LINES = 65_536;

/** Entries of a spamdyke list file. */
export function listLines(text: string): string[] {
  return text
    .split('\n')
    .slice(0, MAX_LINES)
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter((l) => l !== '');
}

export interface Matcher<T = string> {
  /** The entry that matched, or undefined. */
  match(value: T): string | undefined;
  readonly size: number;
}

type V4Test = (n: number) => boolean;

function v4Number(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

const OCTET = /^(\d{1,3})(?:-(\d{1,3}))?$/;

/** One IPv4 entry as a test on the address as a number; undefined when it is not IPv4 syntax. */
function v4Entry(entry: string): V4Test | undefined {
  const slash = /^([\d.]+)\/(\d{1,2}|\d{1,3}(?:\.\d{1,3}){3})$/.exec(entry);
  if (slash) {
    const base = slash[1]!;
    if (isIP(base) !== 4) throw new Error(`bad network address: ${entry}`);
    let mask: number;
    if (slash[2]!.includes('.')) {
      if (isIP(slash[2]!) !== 4) throw new Error(`bad mask: ${entry}`);
      mask = v4Number(slash[2]!);
    } else {
      const bits = Number(slash[2]);
      if (bits > 32) throw new Error(`bad CIDR block: ${entry}`);
      mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    }
    const net = (v4Number(base) & mask) >>> 0;
    return (n) => ((n & mask) >>> 0) === net;
  }
  const parts = entry.replace(/\.$/, '').split('.');
  if (parts.length < 1 || parts.length > 4 || !parts.every((p) => OCTET.test(p))) return undefined;
  // A single bare number is not an IP entry (it would match a quarter of the Internet by accident).
  if (parts.length === 1 && !parts[0]!.includes('-') && !entry.endsWith('.')) return undefined;
  const ranges = parts.map((p) => {
    const m = OCTET.exec(p)!;
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (lo > 255 || hi > 255 || lo > hi) throw new Error(`bad octet range "${p}" in ${entry}`);
    return [lo, hi] as const;
  });
  return (n) => ranges.every(([lo, hi], i) => {
    const o = Math.floor(n / 256 ** (3 - i)) % 256;
    return o >= lo && o <= hi;
  });
}

/** A matcher for spamdyke IP entries; throws naming the first bad entry. */
export function ipList(entries: Iterable<string>): Matcher {
  const v4: Array<{ entry: string; test: V4Test }> = [];
  const v6: Array<{ entry: string; list: BlockList }> = [];
  for (const raw of entries) {
    const entry = raw.trim();
    if (!entry) continue;
    const t = v4Entry(entry);
    if (t) {
      v4.push({ entry, test: t });
      continue;
    }
    const list = new BlockList();
    const cidr = /^([0-9a-f:.]+)\/(\d{1,3})$/i.exec(entry);
    if (cidr && isIP(cidr[1]!) === 6 && Number(cidr[2]) <= 128) list.addSubnet(cidr[1]!, Number(cidr[2]), 'ipv6');
    else if (isIP(entry) === 6) list.addAddress(entry, 'ipv6');
    else throw new Error(`not an IP address, prefix, range, CIDR block or mask: ${entry}`);
    v6.push({ entry, list });
  }
  return {
    size: v4.length + v6.length,
    match(ip) {
      const n = normalizeIp(ip);
      const family = isIP(n);
      if (family === 4) {
        const num = v4Number(n);
        return v4.find((e) => e.test(num))?.entry;
      }
      if (family === 6) return v6.find((e) => e.list.check(n, 'ipv6'))?.entry;
      return undefined;
    },
  };
}

/** rDNS names: exact, or `.domain` for the domain and every name below it. Case-insensitive. */
export function rdnsList(entries: Iterable<string>): Matcher {
  const exact = new Set<string>();
  const suffixes = new Set<string>();
  for (const raw of entries) {
    const e = raw.trim().toLowerCase().replace(/\.$/, '');
    if (!e) continue;
    if (e.startsWith('.')) suffixes.add(e.slice(1));
    else exact.add(e);
  }
  return {
    size: exact.size + suffixes.size,
    match(name) {
      const n = name.toLowerCase().replace(/\.$/, '');
      if (exact.has(n)) return n;
      const labels = n.split('.');
      for (let i = 0; i < labels.length; i++) {
        const d = labels.slice(i).join('.');
        if (suffixes.has(d)) return `.${d}`;
      }
      return undefined;
    },
  };
}

/** Addresses and `@domain` (the domain and its subdomains). Case-insensitive. */
export function addressList(entries: Iterable<string>): Matcher {
  const exact = new Set<string>();
  const domains = new Set<string>();
  for (const raw of entries) {
    const e = raw.trim().toLowerCase();
    if (!e) continue;
    if (e.startsWith('@')) domains.add(e.slice(1).replace(/^\./, '').replace(/\.$/, ''));
    else exact.add(e);
  }
  return {
    size: exact.size + domains.size,
    match(address) {
      const a = address.toLowerCase();
      if (exact.has(a)) return a;
      const at = a.lastIndexOf('@');
      if (at < 0) return undefined;
      const labels = a.slice(at + 1).split('.');
      for (let i = 0; i < labels.length; i++) {
        const d = labels.slice(i).join('.');
        if (domains.has(d)) return `@${d}`;
      }
      return undefined;
    },
  };
}

/** Zone names (DNSBL/RHSBL files): one per line. */
export function zoneLines(text: string): string[] {
  return listLines(text).map((z) => z.toLowerCase().replace(/\.$/, ''));
}
