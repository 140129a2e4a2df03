/**
 * Greylisting (Harris 2003; RFC 6647) over a KeyValueStore, so one greylist
 * can live in memory, in SQLite or in Redis shared by several MX hosts.
 *
 * A first attempt is deferred and its time recorded; a retry after
 * `minDelayMs` and within `retryWindowMs` of the first attempt passes and
 * auto-whitelists the key for `whitelistLifetimeMs`, renewed on every pass.
 * A retry too soon is deferred again without resetting the first-seen time;
 * a retry after the window starts over.
 *
 * Keys (all lower case, under `greylist:`):
 *   greylist:new:<id>  first-seen time (ms), TTL retryWindowMs
 *   greylist:ok:<id>   time of the last pass, TTL whitelistLifetimeMs
 * where <id> is `sender|recipient` (spamdyke: the client IP is not part of
 * the key) or `net|sender|recipient` with the client's /24 (IPv4) or /64
 * (IPv6) as net. The null sender is `<>`.
 */
import { clientNetwork } from '../../core/index.js';
import type { KeyValueStore } from '../../core/services/store.js';
import type { AbortOptions } from '../../core/abort.js';

export interface GreylistOptions {
  /** spamdyke's (sender, recipient) pair, or the classic triplet with the client's /24 (IPv6: /64). */
  readonly key: 'sender-recipient' | 'triplet';
  readonly minDelayMs: number; // default 300_000
  readonly retryWindowMs: number; // how long a first attempt waits for its retry; default 2 days
  readonly whitelistLifetimeMs: number; // auto-whitelist after a pass, renewed on each pass; default 36 days
}

const DAY = 86_400_000;

export const DEFAULT_GREYLIST: GreylistOptions = Object.freeze({
  key: 'sender-recipient',
  minDelayMs: 300_000,
  retryWindowMs: 2 * DAY,
  whitelistLifetimeMs: 36 * DAY,
});

export type GreylistVerdict =
  | { readonly kind: 'pass'; readonly reason: 'whitelisted' | 'retried' }
  | { readonly kind: 'defer'; readonly reason: 'new' | 'too-soon'; readonly retryInMs: number };

/** Escapes the separator so two different pairs never share a key. */
function part(s: string): string {
  return s.replace(/%/g, '%25').replace(/\|/g, '%7C');
}

function address(a: string): string {
  const s = a.trim().toLowerCase().replace(/^<(.*)>$/, '$1');
  return s === '' ? '<>' : s;
}

export class Greylist {
  constructor(
    private readonly store: KeyValueStore,
    private readonly now: () => number,
    private readonly options: GreylistOptions,
  ) {}

  /** The store key suffix for one attempt (exposed for logs and tests). */
  id(t: { readonly ip: string; readonly sender: string; readonly recipient: string }): string {
    const pair = `${part(address(t.sender))}|${part(address(t.recipient))}`;
    return this.options.key === 'triplet' ? `${part(clientNetwork(t.ip))}|${pair}` : pair;
  }

  /** `call.signal` (the hook's) abandons the store operations: the check then rejects with its reason. */
  async check(t: { readonly ip: string; readonly sender: string; readonly recipient: string }, call?: AbortOptions): Promise<GreylistVerdict> {
    const id = this.id(t);
    const okKey = `greylist:ok:${id}`;
    const newKey = `greylist:new:${id}`;
    const { minDelayMs, retryWindowMs, whitelistLifetimeMs } = this.options;
    const now = this.now();

    if ((await this.store.get(okKey, call)) !== undefined) {
      await this.store.set(okKey, String(now), whitelistLifetimeMs, call);
      return { kind: 'pass', reason: 'whitelisted' };
    }

    // Two attempts (another connection, another MX host) at once: exactly one records the first sight.
    for (let attempt = 0; attempt < 2; attempt++) {
      if (await this.store.add(newKey, String(now), retryWindowMs, call)) return { kind: 'defer', reason: 'new', retryInMs: minDelayMs };
      const seen = await this.store.get(newKey, call);
      if (seen === undefined) continue; // expired between add and get: try to record it again
      const first = Number(seen);
      if (!Number.isFinite(first)) {
        await this.store.set(newKey, String(now), retryWindowMs, call);
        return { kind: 'defer', reason: 'new', retryInMs: minDelayMs };
      }
      const waited = now - first;
      if (waited < minDelayMs) return { kind: 'defer', reason: 'too-soon', retryInMs: minDelayMs - waited };
      await this.store.set(okKey, String(now), whitelistLifetimeMs, call);
      await this.store.delete(newKey, call);
      return { kind: 'pass', reason: 'retried' };
    }
    return { kind: 'defer', reason: 'new', retryInMs: minDelayMs };
  }
}
