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
 */
export interface KeyValueStore {
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string, ttlMs?: number): Promise<void>;
  /** Sets only when the key is absent (or expired); true when it was set. */
  add(key: string, value: string, ttlMs?: number): Promise<boolean>;
  delete(key: string): Promise<void>;
  /** Adds 1 (from 0 when absent) and returns the new value; `ttlMs` applies when the key is created. */
  incr(key: string, ttlMs?: number): Promise<number>;
  close(): Promise<void>;
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

  async get(key: string): Promise<string | undefined> {
    return this.live(key)?.value;
  }

  async set(key: string, value: string, ttlMs?: number): Promise<void> {
    this.entries.set(key, { value, expires: ttlMs === undefined ? Infinity : this.now() + ttlMs });
  }

  async add(key: string, value: string, ttlMs?: number): Promise<boolean> {
    if (this.live(key)) return false;
    await this.set(key, value, ttlMs);
    return true;
  }

  async delete(key: string): Promise<void> {
    this.entries.delete(key);
  }

  async incr(key: string, ttlMs?: number): Promise<number> {
    const e = this.live(key);
    const n = (e ? Number(e.value) || 0 : 0) + 1;
    this.entries.set(key, { value: String(n), expires: e ? e.expires : ttlMs === undefined ? Infinity : this.now() + ttlMs });
    return n;
  }

  async close(): Promise<void> {
    this.entries.clear();
  }
}
