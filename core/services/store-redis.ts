/**
 * KeyValueStore on Redis (ioredis 5), for several MX hosts sharing one
 * greylist or one set of counters. Every key is prefixed with
 * `store.prefix`, so several yubin clusters can share one server.
 *
 * Time: Redis keeps its own clock. TTLs are sent as milliseconds (PX /
 * PEXPIRE) and Redis expires the keys by its own time, so a ManualClock in a
 * test cannot move Redis expiry; tests use short real TTLs instead.
 *
 * Failure: a dead or unreachable Redis makes every call reject quickly (the
 * caller decides whether to fail open or closed); connection errors are
 * caught here and never crash the process. While the client knows the
 * connection is down (between reconnect attempts) calls reject at once;
 * otherwise a command waits at most `commandTimeoutMs`.
 */
import { createRequire } from 'node:module';
import type { Redis, RedisOptions } from 'ioredis';
import type { ScriptStore, StoreScript } from './store.js';
import { rejectOnAbort, type AbortOptions } from '../abort.js';

export interface RedisStoreOptions {
  /** Prefix of every key. */
  readonly prefix?: string;
  /** Longest wait for one command, connection included. Default 1500 ms. */
  readonly commandTimeoutMs?: number;
  /** Longest wait for a TCP connection. Default 1000 ms. */
  readonly connectTimeoutMs?: number;
  /** Told of connection errors (they are otherwise only kept as the reason for the next rejection). */
  readonly onError?: (err: Error) => void;
}

/** INCR, and PEXPIRE only when INCR created the key: one script, so atomic. */
const INCR_SCRIPT = `local existed = redis.call('EXISTS', KEYS[1])
local n = redis.call('INCR', KEYS[1])
if existed == 0 and ARGV[1] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`;

/** Redis wants a whole, positive number of milliseconds. */
function px(ttlMs: number): number {
  return Math.max(1, Math.ceil(ttlMs));
}

export class RedisStoreUnavailable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RedisStoreUnavailable';
  }
}

/** ioredis adds a method per defineCommand; this is its shape. */
type DefinedCommand = (...args: Array<string | number>) => Promise<unknown>;

export class RedisKeyValueStore implements ScriptStore {
  private readonly redis: Redis;
  private readonly prefix: string;
  private readonly defined = new Set<string>();
  private lastError: Error | undefined;
  private closed = false;

  constructor(url: string, options: RedisStoreOptions = {}) {
    this.prefix = options.prefix ?? '';
    const redisOptions: RedisOptions = {
      connectTimeout: options.connectTimeoutMs ?? 1000,
      commandTimeout: options.commandTimeoutMs ?? 1500,
      // A command queued while connecting fails after one failed reconnect instead of waiting forever.
      maxRetriesPerRequest: 1,
      // Keep trying in the background, at most every 2 s.
      retryStrategy: (times) => Math.min(times * 100, 2000),
      // Commands sent before the first connection wait for it (bounded by the timeouts above).
      enableOfflineQueue: true,
      enableReadyCheck: true,
    };
    // Required when a Redis store is made, not when the core loads: every `yubin` command would pay for it.
    const { Redis: RedisClient } = createRequire(import.meta.url)('ioredis') as typeof import('ioredis');
    this.redis = new RedisClient(url, redisOptions);
    this.redis.on('error', (err: Error) => {
      this.lastError = err;
      options.onError?.(err);
    });
    this.redis.on('ready', () => (this.lastError = undefined));
  }

  private k(key: string): string {
    return this.prefix + key;
  }

  get keyPrefix(): string {
    return this.prefix;
  }

  /** Runs a script atomically; its keys are prefixed here. Rejects like every call when Redis is down. */
  async runScript(script: StoreScript, keys: readonly string[], args: ReadonlyArray<string | number>, options?: AbortOptions): Promise<unknown> {
    if (keys.length !== script.keys) throw new Error(`script ${script.name} takes ${script.keys} keys, given ${keys.length}`);
    const name = `yubin_${script.name}`;
    if (!this.defined.has(name)) {
      this.redis.defineCommand(name, { numberOfKeys: script.keys, lua: script.lua });
      this.defined.add(name);
    }
    const command = (this.redis as unknown as Record<string, DefinedCommand>)[name]!.bind(this.redis);
    return this.call(() => command(...keys.map((k) => this.k(k)), ...args), options?.signal);
  }

  /**
   * Runs a command, failing at once when the connection is known to be down.
   * A fired signal lets the caller go with its reason; ioredis cannot take a
   * command back, so it may still be carried out.
   */
  private async call<T>(op: () => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
    signal?.throwIfAborted();
    if (this.closed) throw new RedisStoreUnavailable('redis store is closed');
    const status = this.redis.status;
    if (status === 'reconnecting' || status === 'close' || status === 'end') {
      throw new RedisStoreUnavailable(`redis unavailable (${status})${this.lastError ? `: ${this.lastError.message}` : ''}`, { cause: this.lastError });
    }
    try {
      return await rejectOnAbort(op(), signal);
    } catch (err) {
      if (signal?.aborted && err === signal.reason) throw err;
      const e = err as Error;
      throw new RedisStoreUnavailable(`redis: ${e.message}${this.lastError && this.lastError !== e ? ` (${this.lastError.message})` : ''}`, { cause: e });
    }
  }

  async get(key: string, options?: AbortOptions): Promise<string | undefined> {
    const v = await this.call(() => this.redis.get(this.k(key)), options?.signal);
    return v ?? undefined;
  }

  async set(key: string, value: string, ttlMs?: number, options?: AbortOptions): Promise<void> {
    await this.call(() => (ttlMs === undefined ? this.redis.set(this.k(key), value) : this.redis.set(this.k(key), value, 'PX', px(ttlMs))), options?.signal);
  }

  async add(key: string, value: string, ttlMs?: number, options?: AbortOptions): Promise<boolean> {
    const r = await this.call(
      () => (ttlMs === undefined ? this.redis.set(this.k(key), value, 'NX') : this.redis.set(this.k(key), value, 'PX', px(ttlMs), 'NX')),
      options?.signal,
    );
    return r === 'OK';
  }

  async delete(key: string, options?: AbortOptions): Promise<void> {
    await this.call(() => this.redis.del(this.k(key)), options?.signal);
  }

  async incr(key: string, ttlMs?: number, options?: AbortOptions): Promise<number> {
    const n = await this.call(() => this.redis.eval(INCR_SCRIPT, 1, this.k(key), ttlMs === undefined ? '' : String(px(ttlMs))), options?.signal);
    return Number(n);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.redis.status === 'ready') {
      try {
        await this.redis.quit();
        return;
      } catch {
        // fall through to a hard disconnect
      }
    }
    this.redis.disconnect(false);
  }
}
