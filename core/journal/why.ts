/**
 * `yubin why QUERY [--since 2h] [--json]` and the journal part of
 * `yubin status`: they read the journal file directly, so they answer
 * whether or not the server runs.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/schema.js';
import { parseDuration } from '../config/units.js';
import { CommandError } from '../plugin.js';
import { JournalDb } from './db.js';
import { clock, sentence, stories, tell } from './story.js';

export function journalFile(config: Config): string {
  return path.resolve(config.dataDir, config.journal.file);
}

function openJournal(config: Config): JournalDb {
  const file = journalFile(config);
  if (!config.journal.enabled) throw new CommandError('the journal is off in this config (journal.enabled: false): nothing to ask', 1);
  if (!existsSync(file)) throw new CommandError(`no journal at ${file} yet: the server writes it once it has run`, 1);
  return new JournalDb(file, { readonly: true });
}

export function why(config: Config, query: string, opts: { since?: string; json?: boolean }, now = Date.now()): string {
  let since = 0;
  if (opts.since !== undefined) {
    const ms = parseDuration(opts.since);
    if (ms === undefined) throw new CommandError(`--since ${opts.since}: expected a duration such as 30m, 2h or 7d`);
    since = now - ms;
  }
  if (!query.trim()) throw new CommandError('give an IP, an address, a domain, a queue id or a Message-ID');
  const db = openJournal(config);
  try {
    const found = stories(db, query, since);
    if (opts.json) return JSON.stringify(found, null, 2);
    if (!found.length) return `nothing about ${query} in the journal${opts.since ? ` in the last ${opts.since}` : ''}`;
    return tell(found);
  } finally {
    db.close();
  }
}

/** One refusal from the journal: when, from which client IP, on which listener, and what happened. */
export interface Refusal {
  /** Milliseconds since the epoch. */
  readonly time: number;
  readonly ip: string;
  readonly listener: string;
  readonly sentence: string;
}

/** The last refusals, newest first; none when the journal is off or not written yet. */
export function refusals(config: Config, limit = 10): Refusal[] {
  if (!config.journal.enabled || !existsSync(journalFile(config))) return [];
  const db = new JournalDb(journalFile(config), { readonly: true });
  try {
    return db.refusals(limit).map((e) => ({ time: e.time, ip: String(e.record.ip ?? ''), listener: String(e.record.listener ?? ''), sentence: sentence(e.record) ?? '' }));
  } finally {
    db.close();
  }
}

/** The last refusals, newest first, one line each (`yubin status`). */
export function lastRefusals(config: Config, limit = 10): string[] {
  return refusals(config, limit).map((r) => `${clock(r.time)}  ${r.ip} ${r.listener}: ${r.sentence}`);
}
