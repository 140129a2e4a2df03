/**
 * Builds the configured KeyValueStore (`store:` in the config): memory, a
 * SQLite file in dataDir, or Redis shared by several MX hosts.
 */
import path from 'node:path';
import type { StoreConfig } from '../config/schema.js';
import type { Clock } from './clock.js';
import { MemoryStore, type KeyValueStore } from './store.js';
import { SqliteKeyValueStore } from './store-sqlite.js';
import { RedisKeyValueStore } from './store-redis.js';

export { SqliteKeyValueStore, type SqliteStoreOptions } from './store-sqlite.js';
export { RedisKeyValueStore, RedisStoreUnavailable, type RedisStoreOptions } from './store-redis.js';

export function createStore(config: StoreConfig, dataDir: string, clock: Clock): KeyValueStore {
  switch (config.backend) {
    case 'memory':
      return new MemoryStore(() => clock.now());
    case 'sqlite':
      return new SqliteKeyValueStore(path.resolve(dataDir, config.file), () => clock.now());
    case 'redis':
      // Redis expires keys by its own clock; the Clock is not used.
      if (!config.url) throw new Error('store.url is required when store.backend is redis (e.g. redis://127.0.0.1:6379/0)');
      return new RedisKeyValueStore(config.url, { prefix: config.prefix });
    default: {
      const never: never = config.backend;
      throw new Error(`unknown store.backend ${String(never)}`);
    }
  }
}
