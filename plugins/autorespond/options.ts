/**
 * The autorespond plugin's options block (`plugins: autorespond:`), shared by
 * the plugin and `yubin vacation` so both use the same file.
 */
import path from 'node:path';
import { z } from 'zod';

export const autorespondOptions = z.strictObject({
  /** The SQLite file with the vacations and whom they answered; relative to dataDir. */
  database: z.string().min(1).default('autorespond.sqlite'),
});

export type AutorespondOptions = z.output<typeof autorespondOptions>;

export function databasePath(options: AutorespondOptions, dataDir: string): string {
  return path.resolve(dataDir, options.database);
}
