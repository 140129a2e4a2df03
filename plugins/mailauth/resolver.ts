/**
 * mailauth asks DNS the way node:dns `resolve(name, type)` answers; this
 * adapter answers from the core DNS service (cached, pointed at a test
 * server in tests) and turns its "none" and "failed" into the error codes
 * mailauth tells apart: ENOTFOUND / ENODATA are answers (SPF none, no key),
 * ESERVFAIL is a temporary error (temperror), never a pass or a fail.
 */
import type { Dns, Lookup } from '../../core/index.js';

type Resolved = string[][] | string[];

function unwrap<T>(lookup: Lookup<T>, name: string, type: string): T[] {
  if (lookup.kind === 'found') return [...lookup.records];
  const code = lookup.kind === 'failed' ? 'ESERVFAIL' : lookup.reason === 'nxdomain' ? 'ENOTFOUND' : 'ENODATA';
  throw Object.assign(new Error(`${type} ${name}: ${lookup.kind === 'failed' ? lookup.error : lookup.reason}`), { code });
}

/**
 * `signal` (a hook's) abandons every lookup of this resolver: each then fails
 * as ESERVFAIL (a temperror), which is no verdict, and the hook's answer no
 * longer counts anyway.
 */
export function dnsResolver(dns: Dns, signal?: AbortSignal): (name: string, type: string) => Promise<Resolved> {
  const o = signal ? { signal } : undefined;
  return async (name, type) => {
    switch (type.toUpperCase()) {
      case 'TXT':
        // Our TXT answers are already joined per record; node's are arrays of chunks.
        return unwrap(await dns.txt(name, o), name, type).map((t) => [t]);
      case 'A':
        return unwrap(await dns.a(name, o), name, type);
      case 'AAAA':
        return unwrap(await dns.aaaa(name, o), name, type);
      case 'MX':
        // node's shape ({ exchange, priority }), which mailauth reads as such.
        return unwrap(await dns.mx(name, o), name, type) as unknown as string[];
      case 'PTR': {
        const m = /^(.*)\.(in-addr|ip6)\.arpa\.?$/i.exec(name);
        if (!m) throw Object.assign(new Error(`PTR ${name}: not a reverse name`), { code: 'EINVAL' });
        const labels = m[1]!.split('.').reverse();
        const ip = m[2]!.toLowerCase() === 'ip6' ? labels.join('').replace(/(.{4})(?!$)/g, '$1:') : labels.join('.');
        return unwrap(await dns.ptr(ip, o), name, type);
      }
      default:
        throw Object.assign(new Error(`${type} ${name}: type not supported`), { code: 'ENOTIMP' });
    }
  };
}
