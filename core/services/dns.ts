/**
 * The DNS service: node:dns/promises behind one small interface, so a test
 * points it at a loopback DNS server and every caller sees the same three
 * outcomes. A lookup is `found`, `none` (the name or the record type does not
 * exist: an answer) or `failed` (timeout, SERVFAIL, refused: no answer). A
 * failure is never reported as "none": a mail server that confuses the two
 * bounces mail on a flaky resolver, or lets a listed client through.
 *
 * Every lookup takes an optional `{ signal }`. When it fires the call settles
 * at once as `{ kind: 'failed', error: 'aborted' }` (ABORTED): a lookup that
 * was given up on has no answer, and every caller already treats `failed` as
 * "cannot tell now", so nothing new can be mishandled. Such an answer is
 * never cached. node:dns has no way to cancel one query (Resolver.cancel()
 * cancels every query of the resolver), so the call is raced against the
 * signal and the query runs out in the background to its own timeout.
 */
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { normalizeIp } from '../ip.js';
import { reverseIp } from './dnsbl.js';
import type { DnsConfig } from '../config/schema.js';
import { raceAbort, type AbortOptions } from '../abort.js';

export type Lookup<T> =
  | { readonly kind: 'found'; readonly records: readonly T[] }
  | { readonly kind: 'none'; readonly reason: 'nxdomain' | 'nodata' }
  | { readonly kind: 'failed'; readonly error: string };

export interface MxRecord {
  readonly exchange: string;
  readonly priority: number;
}

/**
 * Forward-confirmed reverse DNS (FCrDNS): `confirmed` when a PTR name of the
 * IP resolves back to it; `unconfirmed` when PTR names exist but none does
 * (spamdyke's "does not resolve"); `none` when there is no PTR at all.
 */
export type Fcrdns =
  | { readonly kind: 'confirmed'; readonly name: string; readonly names: readonly string[] }
  | { readonly kind: 'unconfirmed'; readonly names: readonly string[] }
  | { readonly kind: 'none' }
  | { readonly kind: 'failed'; readonly error: string };

/** What an aborted lookup settles as. */
export const ABORTED: { readonly kind: 'failed'; readonly error: 'aborted' } = Object.freeze({ kind: 'failed', error: 'aborted' });

/** The lookup settled as ABORTED: given up on, not a failure of DNS. */
export function isAborted(lookup: { readonly kind: string; readonly error?: string }): boolean {
  return lookup === ABORTED || (lookup.kind === 'failed' && lookup.error === 'aborted');
}

/** Every method takes an optional `{ signal }`; when it fires the call settles at once as ABORTED. */
export interface Dns {
  mx(name: string, options?: AbortOptions): Promise<Lookup<MxRecord>>;
  a(name: string, options?: AbortOptions): Promise<Lookup<string>>;
  aaaa(name: string, options?: AbortOptions): Promise<Lookup<string>>;
  txt(name: string, options?: AbortOptions): Promise<Lookup<string>>;
  ptr(ip: string, options?: AbortOptions): Promise<Lookup<string>>;
  fcrdns(ip: string, options?: AbortOptions): Promise<Fcrdns>;
}

/** Settles with `lookup`, or as ABORTED as soon as the signal fires (the query itself runs on, see above). */
export function abortable<L>(lookup: Promise<L>, signal: AbortSignal | undefined): Promise<L | typeof ABORTED> {
  return raceAbort<L | typeof ABORTED>(lookup, signal, () => ABORTED);
}

/** At most this many PTR names are checked forward (a client could publish hundreds). */
const MAX_PTR_NAMES = 10;

/** FCrDNS over any Dns: PTR, then A or AAAA of each name (at most 10) in parallel. */
export async function forwardConfirm(dns: Pick<Dns, 'ptr' | 'a' | 'aaaa'>, ip: string, options?: AbortOptions): Promise<Fcrdns> {
  const ptr = await dns.ptr(ip, options);
  if (ptr.kind === 'failed') return { kind: 'failed', error: ptr.error };
  if (ptr.kind === 'none') return { kind: 'none' };
  const names = ptr.records.slice(0, MAX_PTR_NAMES).map((n) => n.toLowerCase().replace(/\.$/, ''));
  const v6 = isIP(ip) === 6;
  const want = normalizeIp(ip);
  const answers = await Promise.all(names.map((n) => (v6 ? dns.aaaa(n, options) : dns.a(n, options))));
  const i = answers.findIndex((a) => a.kind === 'found' && a.records.some((r) => normalizeIp(r) === want));
  if (i >= 0) return { kind: 'confirmed', name: names[i]!, names };
  // Only failures and no confirmation: we cannot tell, and must not call it unconfirmed.
  const failed = answers.find((a) => a.kind === 'failed');
  if (failed && failed.kind === 'failed' && answers.every((a) => a.kind !== 'found')) return { kind: 'failed', error: failed.error };
  return { kind: 'unconfirmed', names };
}

const NONE: Record<string, 'nxdomain' | 'nodata'> = { ENOTFOUND: 'nxdomain', ENODATA: 'nodata' };

export class NodeDns implements Dns {
  private readonly resolver: Resolver;

  constructor(config: Pick<DnsConfig, 'servers' | 'timeout' | 'tries'>) {
    this.resolver = new Resolver({ timeout: config.timeout, tries: config.tries });
    if (config.servers.length) this.resolver.setServers([...config.servers]);
  }

  mx(name: string, options?: AbortOptions): Promise<Lookup<MxRecord>> {
    return this.lookup(() => this.resolver.resolveMx(name), options);
  }

  a(name: string, options?: AbortOptions): Promise<Lookup<string>> {
    return this.lookup(() => this.resolver.resolve4(name), options);
  }

  aaaa(name: string, options?: AbortOptions): Promise<Lookup<string>> {
    return this.lookup(() => this.resolver.resolve6(name), options);
  }

  txt(name: string, options?: AbortOptions): Promise<Lookup<string>> {
    return this.lookup(async () => (await this.resolver.resolveTxt(name)).map((parts) => parts.join('')), options);
  }

  ptr(ip: string, options?: AbortOptions): Promise<Lookup<string>> {
    // resolvePtr, not reverse(): reverse() reports a SERVFAIL as ENOTFOUND, and a
    // failed lookup passed off as "no PTR" would refuse good clients on a flaky resolver.
    return this.lookup(() => this.resolver.resolvePtr(`${reverseIp(ip)}.${isIP(ip) === 6 ? 'ip6' : 'in-addr'}.arpa`), options);
  }

  fcrdns(ip: string, options?: AbortOptions): Promise<Fcrdns> {
    return forwardConfirm(this, ip, options);
  }

  private lookup<T>(query: () => Promise<T[]>, options: AbortOptions | undefined): Promise<Lookup<T>> {
    const signal = options?.signal;
    if (signal?.aborted) return Promise.resolve(ABORTED);
    return abortable(this.settle(query), signal);
  }

  private async settle<T>(query: () => Promise<T[]>): Promise<Lookup<T>> {
    try {
      const records = await query();
      return records.length ? { kind: 'found', records } : { kind: 'none', reason: 'nodata' };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      const none = NONE[code];
      if (none) return { kind: 'none', reason: none };
      return { kind: 'failed', error: `${code || 'error'}: ${(err as Error).message}` };
    }
  }
}
