/** IP address lists: exact addresses, CIDR blocks and qmail-style dotted prefixes (`192.168.`). */
import { BlockList, isIP } from 'node:net';
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
