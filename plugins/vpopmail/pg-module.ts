/**
 * `pg`, loaded when the first PostgreSQL store opens rather than when the
 * plugin loads: every `yubin` command loads the plugin, few sites use
 * PostgreSQL, and the driver costs about 0.1 s of start-up.
 */
import { createRequire } from 'node:module';
import type * as Pg from 'pg';

let loaded: typeof Pg | undefined;

export function pgModule(): typeof Pg {
  return (loaded ??= createRequire(import.meta.url)('pg') as typeof Pg);
}
