/**
 * Builds the configured KeyValueStore. STUB: sqlite and redis are being written.
 */
import type { StoreConfig } from '../config/schema.js';
import type { Clock } from './clock.js';
import { MemoryStore, type KeyValueStore } from './store.js';

export function createStore(config: StoreConfig, dataDir: string, clock: Clock): KeyValueStore {
  void dataDir;
  if (config.backend === 'memory') return new MemoryStore(() => clock.now());
  // STUB: until the sqlite and redis back ends exist, state lives in memory.
  return new MemoryStore(() => clock.now());
}
