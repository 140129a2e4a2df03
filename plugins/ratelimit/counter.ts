/**
 * Message counts per window over the KeyValueStore, so the configured store
 * decides how far a limit reaches: memory (this process), SQLite (this
 * host), Redis (every node sharing it).
 *
 * A window is fixed and starts with the first message counted: the key is
 * created by INCR with the window as its TTL (atomic in every back end), and
 * the count starts again once it expires. Simple, one key per thing counted,
 * and never more than 2 x limit in any span of one window.
 *
 * Keys: `ratelimit:<kind>:<value>`, e.g. `ratelimit:sender:news@example.com`.
 */
import type { AbortOptions, KeyValueStore } from '../../core/index.js';
import type { Limit } from './options.js';

export type CountKind = 'sender' | 'ip' | 'user';

/** One thing a message is counted against. */
export interface Counted {
  readonly kind: CountKind;
  readonly value: string;
  readonly limit: Limit;
}

/** The first count already at its limit, or undefined when every one has room. */
export interface Exceeded {
  readonly counted: Counted;
  readonly count: number;
}

function key(c: Counted): string {
  return `ratelimit:${c.kind}:${c.value}`;
}

export class RateCounter {
  constructor(private readonly store: () => KeyValueStore) {}

  /** Reads the counts (in parallel: one round trip's wait); the first one at its limit, if any. */
  async over(counts: readonly Counted[], options?: AbortOptions): Promise<Exceeded | undefined> {
    const values = await Promise.all(counts.map((c) => this.store().get(key(c), options)));
    for (let i = 0; i < counts.length; i++) {
      const count = Number(values[i] ?? 0) || 0;
      if (count >= counts[i]!.limit.limit) return { counted: counts[i]!, count };
    }
    return undefined;
  }

  /** Counts one accepted message against each. */
  async add(counts: readonly Counted[], options?: AbortOptions): Promise<void> {
    await Promise.all(counts.map((c) => this.store().incr(key(c), c.limit.window, options)));
  }
}
