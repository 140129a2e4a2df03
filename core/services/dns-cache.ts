/**
 * A caching DNS service in front of another one: answers are kept for their
 * TTL (clamped to [minTtl, maxTtl]), negative answers (`none`) for
 * negativeTtl, failures never. At most `cacheSize` answers are kept; the
 * least recently used go first (a Map keeps insertion order, and a hit moves
 * its entry to the end). Identical queries in flight share one promise, so a
 * burst of connections from one client asks the resolver once.
 *
 * Node's resolver only reports TTLs for A and AAAA (`{ ttl: true }`); MX, TXT
 * and PTR answers are kept for min(maxTtl, 1 h). TtlNodeDns below is NodeDns
 * plus the A/AAAA TTLs; any other Dns works too, with the fixed lifetime.
 *
 * A caller's signal only lets that caller go: the query underneath is shared
 * with whoever else asked, so it is sent without the signal and its answer,
 * when it comes, is cached as usual. An aborted call's ABORTED is never cached.
 */
import { Resolver } from 'node:dns/promises';
import type { DnsConfig } from '../config/schema.js';
import { abortable, ABORTED, forwardConfirm, NodeDns, type Dns, type Fcrdns, type Lookup, type MxRecord } from './dns.js';
import type { AbortOptions } from '../abort.js';

/** An answer with the TTL (seconds) the server gave, when known. */
export interface TimedLookup<T> {
  readonly lookup: Lookup<T>;
  readonly ttl: number | undefined;
}

/** A Dns that can also tell how long its A and AAAA answers may be kept. */
export interface TtlDns extends Dns {
  aWithTtl?(name: string, options?: AbortOptions): Promise<TimedLookup<string>>;
  aaaaWithTtl?(name: string, options?: AbortOptions): Promise<TimedLookup<string>>;
}

export type DnsCacheConfig = Pick<DnsConfig, 'cacheSize' | 'minTtl' | 'maxTtl' | 'negativeTtl'>;

/** Lifetime of answers whose TTL the resolver does not report. */
const UNKNOWN_TTL_MS = 3_600_000;

const NONE: Record<string, 'nxdomain' | 'nodata'> = { ENOTFOUND: 'nxdomain', ENODATA: 'nodata' };

/** NodeDns that also answers A and AAAA with their TTL (a second Resolver with the same settings). */
export class TtlNodeDns extends NodeDns implements TtlDns {
  private readonly ttlResolver: Resolver;

  constructor(config: Pick<DnsConfig, 'servers' | 'timeout' | 'tries'>) {
    super(config);
    this.ttlResolver = new Resolver({ timeout: config.timeout, tries: config.tries });
    if (config.servers.length) this.ttlResolver.setServers([...config.servers]);
  }

  override async a(name: string, options?: AbortOptions): Promise<Lookup<string>> {
    return (await this.aWithTtl(name, options)).lookup;
  }

  override async aaaa(name: string, options?: AbortOptions): Promise<Lookup<string>> {
    return (await this.aaaaWithTtl(name, options)).lookup;
  }

  aWithTtl(name: string, options?: AbortOptions): Promise<TimedLookup<string>> {
    return abortableTimed(timed(() => this.ttlResolver.resolve4(name, { ttl: true })), options);
  }

  aaaaWithTtl(name: string, options?: AbortOptions): Promise<TimedLookup<string>> {
    return abortableTimed(timed(() => this.ttlResolver.resolve6(name, { ttl: true })), options);
  }
}

const ABORTED_TIMED: TimedLookup<never> = { lookup: ABORTED, ttl: undefined };

function abortableTimed<T>(work: Promise<TimedLookup<T>>, options: AbortOptions | undefined): Promise<TimedLookup<T>> {
  if (!options?.signal) return work;
  return abortable(work, options.signal).then((r) => (r === ABORTED ? ABORTED_TIMED : (r as TimedLookup<T>)));
}

async function timed(query: () => Promise<Array<{ address: string; ttl: number }>>): Promise<TimedLookup<string>> {
  try {
    const records = await query();
    if (!records.length) return { lookup: { kind: 'none', reason: 'nodata' }, ttl: undefined };
    return { lookup: { kind: 'found', records: records.map((r) => r.address) }, ttl: Math.min(...records.map((r) => r.ttl)) };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    const none = NONE[code];
    if (none) return { lookup: { kind: 'none', reason: none }, ttl: undefined };
    return { lookup: { kind: 'failed', error: `${code || 'error'}: ${(err as Error).message}` }, ttl: undefined };
  }
}

interface Entry {
  readonly value: Lookup<unknown>;
  readonly expires: number;
}

export class CachingDns implements Dns {
  private readonly entries = new Map<string, Entry>();
  private readonly inFlight = new Map<string, Promise<Lookup<unknown>>>();
  /** Questions answered from the cache or by a query already in flight, and those sent on (the metrics read them). */
  private hits = 0;
  private misses = 0;

  /** `now` is the Clock service's (milliseconds), so a test can move time. */
  constructor(
    private readonly inner: TtlDns,
    private readonly config: DnsCacheConfig,
    private readonly now: () => number = Date.now,
  ) {}

  /** Answers currently kept (expired ones included until they are looked at or evicted). */
  get size(): number {
    return this.entries.size;
  }

  clear(): void {
    this.entries.clear();
  }

  /** For the metrics: hits (cached, or shared with a query in flight), misses (asked the resolver), answers kept. */
  cacheStats(): { hits: number; misses: number; size: number } {
    return { hits: this.hits, misses: this.misses, size: this.entries.size };
  }

  mx(name: string, options?: AbortOptions): Promise<Lookup<MxRecord>> {
    return this.cached('MX', name, options, async () => ({ lookup: await this.inner.mx(name), ttl: undefined }));
  }

  a(name: string, options?: AbortOptions): Promise<Lookup<string>> {
    const inner = this.inner;
    return this.cached('A', name, options, async () => (inner.aWithTtl ? inner.aWithTtl(name) : { lookup: await inner.a(name), ttl: undefined }));
  }

  aaaa(name: string, options?: AbortOptions): Promise<Lookup<string>> {
    const inner = this.inner;
    return this.cached('AAAA', name, options, async () => (inner.aaaaWithTtl ? inner.aaaaWithTtl(name) : { lookup: await inner.aaaa(name), ttl: undefined }));
  }

  txt(name: string, options?: AbortOptions): Promise<Lookup<string>> {
    return this.cached('TXT', name, options, async () => ({ lookup: await this.inner.txt(name), ttl: undefined }));
  }

  ptr(ip: string, options?: AbortOptions): Promise<Lookup<string>> {
    return this.cached('PTR', ip, options, async () => ({ lookup: await this.inner.ptr(ip), ttl: undefined }));
  }

  /** Through the cached PTR and A/AAAA lookups. */
  fcrdns(ip: string, options?: AbortOptions): Promise<Fcrdns> {
    return forwardConfirm(this, ip, options);
  }

  /** The shared lookup (cached, or in flight), let go of when this caller's signal fires. */
  private cached<T>(type: string, name: string, options: AbortOptions | undefined, query: () => Promise<TimedLookup<T>>): Promise<Lookup<T>> {
    const signal = options?.signal;
    if (signal?.aborted) return Promise.resolve(ABORTED);
    const shared = this.shared(type, name, query);
    return signal ? abortable(shared, signal) : shared;
  }

  private shared<T>(type: string, name: string, query: () => Promise<TimedLookup<T>>): Promise<Lookup<T>> {
    const key = `${type} ${name.toLowerCase().replace(/\.$/, '')}`;
    const hit = this.entries.get(key);
    if (hit) {
      this.entries.delete(key);
      if (hit.expires > this.now()) {
        this.entries.set(key, hit); // most recently used: to the end
        this.hits++;
        return Promise.resolve(hit.value as Lookup<T>);
      }
    }
    const pending = this.inFlight.get(key);
    if (pending) {
      this.hits++;
      return pending as Promise<Lookup<T>>;
    }
    this.misses++;
    const p = (async (): Promise<Lookup<T>> => {
      let result: TimedLookup<T>;
      try {
        result = await query();
      } catch (err) {
        result = { lookup: { kind: 'failed', error: (err as Error).message }, ttl: undefined };
      }
      this.store(key, result);
      return result.lookup;
    })().finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, p);
    return p;
  }

  private store(key: string, { lookup, ttl }: TimedLookup<unknown>): void {
    const { cacheSize, minTtl, maxTtl, negativeTtl } = this.config;
    // A failure (an aborted call's ABORTED included) is no answer: the next query asks again.
    if (lookup.kind === 'failed' || cacheSize <= 0) return;
    const lifetime = lookup.kind === 'none' ? negativeTtl : Math.max(minTtl, Math.min(maxTtl, ttl === undefined ? UNKNOWN_TTL_MS : ttl * 1000));
    if (lifetime <= 0) return;
    this.entries.delete(key);
    this.entries.set(key, { value: lookup, expires: this.now() + lifetime });
    while (this.entries.size > cacheSize) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }
}
