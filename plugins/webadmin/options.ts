/**
 * The webadmin plugin's options block (`plugins: webadmin:`), shared by the
 * plugin and `yubin admin` so both use the same database.
 */
import path from 'node:path';
import { z } from 'zod';
import { parseDuration } from '../../core/index.js';

const duration = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined || ms <= 0) {
    ctx.addIssue({ code: 'custom', message: `not a duration: ${JSON.stringify(v)} (use seconds or a number with s, m, h or d)` });
    return z.NEVER;
  }
  return ms;
});

export const webadminOptions = z.strictObject({
  /** Addresses of vpopmail users who administer the whole server (more with `yubin admin add`). */
  admins: z.array(z.string().regex(/^[^@\s<>]+@[^@\s<>]+$/, 'not an address (local@domain)').transform((a) => a.toLowerCase())).default([]),
  /** SQLite file with the admins added by `yubin admin add` and the API tokens; relative to dataDir. */
  database: z.string().min(1).default('webadmin.sqlite'),
  /** How long a login lasts. */
  sessionTtl: duration.default(8 * 3_600_000),
});

export type WebadminOptions = z.output<typeof webadminOptions>;

export function databasePath(options: WebadminOptions, dataDir: string): string {
  return path.resolve(dataDir, options.database);
}
