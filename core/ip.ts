/** IP address lists: exact addresses, CIDR blocks and qmail-style dotted prefixes (`192.168.`). */
import { BlockList, isIP, isIPv4, isIPv6 } from 'node:net';
import os from 'node:os';

export interface IpMatcher {
  matches(ip: string): boolean;
  readonly size: number;
}

/** `::ffff:192.0.2.1` is 192.0.2.1: an IPv4 client of a dual-stack socket. */
export function normalizeIp(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return (m ? m[1]! : ip).toLowerCase();
}

/** Turns one list entry into a BlockList rule; returns an error text for a bad entry. */
function addEntry(list: BlockList, entry: string): string | undefined {
  const cidr = /^([^/]+)\/(\d{1,3})$/.exec(entry);
  if (cidr) {
    const family = isIP(cidr[1]!);
    const bits = Number(cidr[2]);
    if (!family || bits > (family === 4 ? 32 : 128)) return `bad CIDR block ${entry}`;
    list.addSubnet(cidr[1]!, bits, family === 4 ? 'ipv4' : 'ipv6');
    return undefined;
  }
  const prefix = /^(\d{1,3}(?:\.\d{1,3}){0,2})\.$/.exec(entry);
  if (prefix) {
    const octets = prefix[1]!.split('.');
    if (octets.some((o) => Number(o) > 255)) return `bad prefix ${entry}`;
    const base = [...octets, ...Array(4 - octets.length).fill('0')].join('.');
    list.addSubnet(base, octets.length * 8, 'ipv4');
    return undefined;
  }
  const family = isIP(entry);
  if (!family) return `not an IP address, CIDR block or prefix: ${entry}`;
  list.addAddress(entry, family === 4 ? 'ipv4' : 'ipv6');
  return undefined;
}

/** A matcher for the entries; throws naming the first bad one. */
export function ipMatcher(entries: Iterable<string>): IpMatcher {
  const list = new BlockList();
  let size = 0;
  for (const raw of entries) {
    const entry = raw.trim();
    if (!entry) continue;
    const err = addEntry(list, entry);
    if (err) throw new Error(err);
    size++;
  }
  return {
    size,
    matches(ip: string): boolean {
      const n = normalizeIp(ip);
      const family = isIP(n);
      return family !== 0 && list.check(n, family === 4 ? 'ipv4' : 'ipv6');
    },
  };
}

/** The address belongs to this host: loopback, or one of its interfaces. */
export function isOwnAddress(ip: string): boolean {
  const n = normalizeIp(ip);
  if (n === '::1' || n.startsWith('127.')) return true;
  return Object.values(os.networkInterfaces()).some((list) => list?.some((i) => normalizeIp(i.address) === n));
}

/** Expands an IPv6 address to its eight 16-bit groups. */
function ipv6Groups(ip: string): number[] | undefined {
  let text = ip;
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  // A trailing dotted IPv4 part (::ffff:192.0.2.1) is two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const b = v4[1]!.split('.').map(Number);
    text = text.slice(0, v4.index) + `${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail, extra] = text.split('::');
  if (extra !== undefined) return undefined;
  const h = head ? head.split(':') : [];
  const t = tail === undefined ? [] : tail ? tail.split(':') : [];
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  if (fill < 0) return undefined;
  const groups = [...h, ...Array<string>(fill).fill('0'), ...t].map((g) => parseInt(g, 16));
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : undefined;
}

/**
 * A client's network, `a.b.c.0/24` or the /64 of an IPv6 address (an IPv4-mapped one is its
 * IPv4 /24): what greylisting's triplets and the login throttle's known networks are keyed on.
 */
export function clientNetwork(ip: string): string {
  const bare = ip.trim().toLowerCase().replace(/^\[|\]$/g, '');
  if (isIPv4(bare)) return `${bare.split('.').slice(0, 3).join('.')}.0/24`;
  if (isIPv6(bare)) {
    const g = ipv6Groups(bare);
    if (g) {
      // IPv4-mapped (::ffff:a.b.c.d): the IPv4 /24.
      if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return `${g[6]! >> 8}.${g[6]! & 0xff}.${g[7]! >> 8}.0/24`;
      return `${g.slice(0, 4).map((x) => x.toString(16)).join(':')}::/64`;
    }
  }
  return bare; // not an address (a test, a socket path): the value itself
}
