/**
 * A small key-value store with expiry, shared by plugins that keep state
 * between connections: greylisting triplets, counters, auto-whitelists.
 * One interface, three back ends chosen in the config (`store:`): memory
 * (tests, one process), SQLite in dataDir (the embedded default, survives a
 * restart) and Redis (several MX hosts sharing one greylist).
 *
 * Keys are plain strings; a plugin prefixes its own (`greylist:...`).
 * Values are strings. A TTL is in milliseconds from now; undefined keeps the
 * key until deleted.
 *
 * Every operation takes an optional trailing `{ signal }` (a hook's
 * `ctx.signal`). An operation whose signal has fired rejects with the
 * signal's reason, as fetch() does: at once when it had already fired
 * (nothing is done), or as soon as it fires while waiting for a remote
 * back end (Redis: the command may still be carried out). The memory and
 * SQLite back ends are synchronous underneath and only check before starting.
 */
import type { AbortOptions } from '../abort.js';

export interface KeyValueStore {
  get(key: string, options?: AbortOptions): Promise<string | undefined>;
  set(key: string, value: string, ttlMs?: number, options?: AbortOptions): Promise<void>;
  /** Sets only when the key is absent (or expired); true when it was set. */
  add(key: string, value: string, ttlMs?: number, options?: AbortOptions): Promise<boolean>;
  delete(key: string, options?: AbortOptions): Promise<void>;
  /** Adds 1 (from 0 when absent) and returns the new value; `ttlMs` applies when the key is created. */
  incr(key: string, ttlMs?: number, options?: AbortOptions): Promise<number>;
  close(): Promise<void>;
}

/**
 * A Lua script the store runs atomically on the server, once registered by
 * `name` (ioredis defineCommand: EVALSHA, EVAL when the server does not have
 * it yet). Only Redis runs them: state that several nodes change at once
 * (login throttle, connection counts) needs a read and a write that no other
 * node can come between, which get/set/incr cannot give.
 */
export interface StoreScript {
  readonly name: string;
  readonly keys: number;
  readonly lua: string;
}

/** A store that runs scripts: keys are given without the store's prefix, which is added to each. */
export interface ScriptStore extends KeyValueStore {
  /** The prefix the store puts before every key (a script building key names of its own needs it). */
  readonly keyPrefix: string;
  runScript(script: StoreScript, keys: readonly string[], args: ReadonlyArray<string | number>, options?: AbortOptions): Promise<unknown>;
}

export function canRunScripts(store: KeyValueStore): store is ScriptStore {
  return typeof (store as Partial<ScriptStore>).runScript === 'function';
}

/** In-process store: tests, and a single server that may forget its state on restart. */
export class MemoryStore implements KeyValueStore {
  private readonly entries = new Map<string, { value: string; expires: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  private live(key: string): { value: string; expires: number } | undefined {
    const e = this.entries.get(key);
    if (e && e.expires <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e;
  }

  async get(key: string, options?: AbortOptions): Promise<string | undefined> {
    options?.signal?.throwIfAborted();
    return this.live(key)?.value;
  }

  async set(key: string, value: string, ttlMs?: number, options?: AbortOptions): Promise<void> {
    options?.signal?.throwIfAborted();
    this.entries.set(key, { value, expires: ttlMs === undefined ? Infinity : this.now() + ttlMs });
  }

  async add(key: string, value: string, ttlMs?: number, options?: AbortOptions): Promise<boolean> {
    options?.signal?.throwIfAborted();
    if (this.live(key)) return false;
    await this.set(key, value, ttlMs);
    return true;
  }

  async delete(key: string, options?: AbortOptions): Promise<void> {
    options?.signal?.throwIfAborted();
    this.entries.delete(key);
  }

  async incr(key: string, ttlMs?: number, options?: AbortOptions): Promise<number> {
    options?.signal?.throwIfAborted();
    const e = this.live(key);
    const n = (e ? Number(e.value) || 0 : 0) + 1;
    this.entries.set(key, { value: String(n), expires: e ? e.expires : ttlMs === undefined ? Infinity : this.now() + ttlMs });
    return n;
  }

  async close(): Promise<void> {
    this.entries.clear();
  }
}
