/**
 * Maildir++ quotas the way vpopmail keeps them.
 *
 * `<Maildir>/maildirsize` holds the quota string on its first line and then
 * `<bytes> <count>` lines, one per delivery (or deletion, with negative
 * numbers); usage is their sum. The file is only a cache: it is rebuilt from
 * the Maildir itself when it is missing, large (>= 5120 bytes), older than 15
 * minutes, malformed or written for a different quota. Anything that changes
 * the Maildir without updating the file (POP3 deletes, plain qmail-local)
 * therefore heals itself within 15 minutes.
 *
 * An unlimited quota (`{}`, written `NOQUOTA`) never touches the disk:
 * vpopmail only maintains maildirsize for users that have a quota.
 */
import { constants } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';

/** A quota: a byte limit, a message-count limit, either, or neither (unlimited). */
export interface Quota {
  bytes?: number;
  count?: number;
}

export interface Usage {
  bytes: number;
  count: number;
}

export interface QuotaCheck {
  /** The incoming message would take the mailbox over a limit. */
  over: boolean;
  /** Usage before the incoming message. */
  usage: Usage;
  /** Current usage as a whole percentage of the tighter limit (0 when unlimited). */
  percent: number;
}

export const MAILDIRSIZE = 'maildirsize';
/** vpopmail (and Courier) rebuild the file once it reaches this size... */
export const RECALC_SIZE = 5120;
/** ...or once it has not been written for this long. */
export const RECALC_AGE_MS = 15 * 60 * 1000;

const UNITS: Record<string, number> = { '': 1, B: 1, K: 1024, KB: 1024, M: 1024 ** 2, MB: 1024 ** 2, G: 1024 ** 3, GB: 1024 ** 3 };
const MAILDIRPP_PART = /^(\d+)([SC])$/;
const LEGACY = /^(\d+(?:\.\d+)?)([KMG]?B?)$/;
const DELTA_LINE = /^\s*(-?\d+)\s+(-?\d+)\s*$/;
const SIZE_IN_NAME = /,S=(\d+)/;

/**
 * Parse a vpasswd quota field. `NOQUOTA` or empty → `{}` (unlimited);
 * Maildir++ `10000000S`, `1000C`, `10000000S,1000C`; legacy `1MB`, `1000KB`,
 * `5M`, `500000` (bytes, binary multiples as vpopmail converts them).
 * Returns undefined for anything else so that callers can refuse it.
 *
 * As in Maildir++, a zero limit means "no limit" for that dimension, so `0S`
 * parses to `{}`.
 */
export function parseQuota(text: string): Quota | undefined {
  const s = text.trim().toUpperCase();
  if (s === '' || s === 'NOQUOTA') return {};
  const quota: Quota = {};
  const legacy = LEGACY.exec(s);
  if (legacy) {
    const bytes = Math.floor(Number(legacy[1]) * UNITS[legacy[2]!]!);
    if (!Number.isSafeInteger(bytes)) return undefined;
    if (bytes > 0) quota.bytes = bytes;
    return quota;
  }
  const seen = new Set<string>();
  for (const part of s.split(',')) {
    const m = MAILDIRPP_PART.exec(part.trim());
    if (!m || seen.has(m[2]!)) return undefined;
    seen.add(m[2]!);
    const n = Number(m[1]);
    if (!Number.isSafeInteger(n)) return undefined;
    if (n === 0) continue;
    if (m[2] === 'S') quota.bytes = n;
    else quota.count = n;
  }
  return quota;
}

/** Canonical quota string: `10000000S,1000C`, `10000000S`, `1000C` or `NOQUOTA`. */
export function formatQuota(q: Quota): string {
  const parts: string[] = [];
  if (q.bytes) parts.push(`${q.bytes}S`);
  if (q.count) parts.push(`${q.count}C`);
  return parts.length > 0 ? parts.join(',') : 'NOQUOTA';
}

export function isUnlimited(q: Quota): boolean {
  return !q.bytes && !q.count;
}

/** Current usage of a Maildir, from maildirsize when it can be trusted, else by recounting. */
export async function readUsage(maildir: string, quota: Quota, now: number = Date.now()): Promise<Usage> {
  return (await loadUsage(maildir, quota, now)).usage;
}

/**
 * Would a message of `incomingBytes` take the mailbox over quota? When the
 * answer is yes on the strength of accumulated delivery lines, the file is
 * rebuilt once and the check repeated, so that mail deleted behind
 * maildirsize's back does not cause a false bounce.
 */
export async function checkQuota(maildir: string, quota: Quota, incomingBytes: number, now: number = Date.now()): Promise<QuotaCheck> {
  if (isUnlimited(quota)) return { over: false, usage: { bytes: 0, count: 0 }, percent: 0 };
  let loaded = await loadUsage(maildir, quota, now);
  if (wouldExceed(quota, loaded.usage, incomingBytes) && !loaded.recalculated && loaded.deltaLines > 0) {
    loaded = { usage: await recalculate(maildir, quota), recalculated: true, deltaLines: 1 };
  }
  return { over: wouldExceed(quota, loaded.usage, incomingBytes), usage: loaded.usage, percent: percentUsed(quota, loaded.usage) };
}

/**
 * Account for a message that has just been placed in the Maildir (call it
 * after the rename into new/). The line is appended with O_APPEND in a single
 * write, so concurrent deliveries cannot interleave. When maildirsize does not
 * exist yet it is built by recounting, which already includes the new message.
 */
export async function recordDelivery(maildir: string, quota: Quota, bytes: number): Promise<void> {
  if (isUnlimited(quota)) return;
  const file = path.join(maildir, MAILDIRSIZE);
  let handle;
  try {
    // No O_CREAT: a file without its header line would be misread as another quota.
    handle = await open(file, constants.O_WRONLY | constants.O_APPEND);
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') throw err;
    await recalculate(maildir, quota);
    return;
  }
  try {
    await handle.write(`${Math.trunc(bytes)} 1\n`);
  } finally {
    await handle.close();
  }
}

/** Rebuild maildirsize from the Maildir's contents and return the counted usage. */
export async function recalculate(maildir: string, quota: Quota): Promise<Usage> {
  const usage = await countMaildir(maildir);
  await writeAtomically(maildir, `${formatQuota(quota)}\n${usage.bytes} ${usage.count}\n`);
  return usage;
}

/** Usage of the whole Maildir: cur/ and new/ of the inbox and of every folder but .Trash. */
export async function countMaildir(maildir: string): Promise<Usage> {
  const total: Usage = { bytes: 0, count: 0 };
  const dirs = [maildir];
  for (const entry of await readdir(maildir, { withFileTypes: true }).catch(ignoreMissing([]))) {
    // Maildir++ folders are flat `.Name` / `.Parent.Child` directories. Trash is
    // exempt so that deleting mail (a move to Trash) frees quota.
    if (entry.isDirectory() && entry.name.startsWith('.') && entry.name !== '.' && entry.name !== '..' && entry.name !== '.Trash') {
      dirs.push(path.join(maildir, entry.name));
    }
  }
  for (const dir of dirs) {
    for (const sub of ['cur', 'new']) {
      const u = await countMessages(path.join(dir, sub));
      total.bytes += u.bytes;
      total.count += u.count;
    }
  }
  return total;
}

// ---------------------------------------------------------------------------

interface Loaded {
  usage: Usage;
  /** The usage was just counted from the Maildir. */
  recalculated: boolean;
  /** Lines after the header in the file that was read. */
  deltaLines: number;
}

async function loadUsage(maildir: string, quota: Quota, now: number): Promise<Loaded> {
  if (isUnlimited(quota)) return { usage: await countMaildir(maildir), recalculated: true, deltaLines: 0 };
  const fromFile = await readMaildirsize(maildir, quota, now);
  if (fromFile) return fromFile;
  return { usage: await recalculate(maildir, quota), recalculated: true, deltaLines: 1 };
}

/** The usage recorded in maildirsize, or undefined when the file must be rebuilt. */
async function readMaildirsize(maildir: string, quota: Quota, now: number): Promise<Loaded | undefined> {
  const file = path.join(maildir, MAILDIRSIZE);
  let text: string;
  try {
    const st = await stat(file);
    if (!st.isFile() || st.size >= RECALC_SIZE || now - st.mtimeMs > RECALC_AGE_MS) return undefined;
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    throw err;
  }
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const header = parseQuota(lines[0] ?? '');
  // Compared semantically: another writer may have put `1000C,5000S`.
  if (!header || formatQuota(header) !== formatQuota(quota)) return undefined;
  const usage: Usage = { bytes: 0, count: 0 };
  for (const line of lines.slice(1)) {
    const m = DELTA_LINE.exec(line);
    if (!m) return undefined;
    usage.bytes += Number(m[1]);
    usage.count += Number(m[2]);
  }
  // A negative total means the file and the Maildir disagree; recount.
  if (usage.bytes < 0 || usage.count < 0) return undefined;
  return { usage, recalculated: false, deltaLines: lines.length - 1 };
}

async function countMessages(dir: string): Promise<Usage> {
  const u: Usage = { bytes: 0, count: 0 };
  const names = await readdir(dir).catch(ignoreMissing<string[]>([]));
  for (const name of names) {
    if (name.startsWith('.')) continue;
    // The size is in the name for anything delivered by a Maildir++-aware
    // agent (",S=<n>" before the ":2," flags); stat only the rest.
    const sized = SIZE_IN_NAME.exec(name.split(':')[0]!);
    if (sized) {
      u.bytes += Number(sized[1]);
      u.count++;
      continue;
    }
    try {
      const st = await stat(path.join(dir, name));
      if (!st.isFile()) continue;
      u.bytes += st.size;
      u.count++;
    } catch (err) {
      // Expunged or moved while we were counting.
      if (errorCode(err) !== 'ENOENT') throw err;
    }
  }
  return u;
}

/**
 * Replace maildirsize via a unique name in tmp/ and rename(2), so readers see
 * either the old or the new file, never a partial one. A Maildir that does not
 * exist yet gets no file; the usage is still returned to the caller.
 */
async function writeAtomically(maildir: string, content: string): Promise<void> {
  const tmpDir = path.join(maildir, 'tmp');
  try {
    await mkdir(tmpDir, { mode: 0o700 });
  } catch (err) {
    const code = errorCode(err);
    if (code === 'ENOENT') return;
    if (code !== 'EEXIST') throw err;
  }
  const tmp = path.join(tmpDir, `${Date.now()}.${process.pid}_${randomBytes(6).toString('hex')}.maildirsize`);
  try {
    await writeFile(tmp, content, { mode: 0o600, flag: 'wx' });
    await rename(tmp, path.join(maildir, MAILDIRSIZE));
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

function wouldExceed(quota: Quota, usage: Usage, incomingBytes: number): boolean {
  if (quota.bytes && usage.bytes + incomingBytes > quota.bytes) return true;
  if (quota.count && usage.count + 1 > quota.count) return true;
  return false;
}

function percentUsed(quota: Quota, usage: Usage): number {
  const byBytes = quota.bytes ? (usage.bytes * 100) / quota.bytes : 0;
  const byCount = quota.count ? (usage.count * 100) / quota.count : 0;
  return Math.floor(Math.max(byBytes, byCount));
}

function errorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

function ignoreMissing<T>(fallback: T): (err: unknown) => T {
  return (err) => {
    if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return fallback;
    throw err;
  };
}
