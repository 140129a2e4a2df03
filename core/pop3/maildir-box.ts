/**
 * A Maildir as one POP3 session sees it (qmail-pop3d's job): the messages in
 * `new/` and `cur/` at login, in delivery order, with their wire sizes and
 * unique ids; deletions and "seen" marks are only remembered until QUIT
 * applies them (UPDATE).
 *
 * Login has to be quick for a mailbox of ten thousand messages. A mailbox
 * whose new/ and cur/ have not changed since the last login is not listed
 * again. A scan reads no message: sizes come from the `,W=` part of the name
 * when there is one (Maildir++ and Dovecot write it, yubin's own deliveries
 * too), or from a cache filled the first time a file had to be read. The
 * stats are synchronous calls in slices: measured on 10,000 files that is
 * about twice as fast as the same stats through the thread pool, and
 * yielding between slices keeps other sessions served.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { open, readdir, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { WireSizeCounter } from './wire-format.js';

export interface Pop3Message {
  /** Message number, from 1, fixed for the session. */
  readonly number: number;
  readonly uid: string;
  /** Octets as sent on the wire (CRLF line ends, before dot-stuffing). */
  readonly size: number;
  /** Where the file is now; a move by another program is followed when the file is opened. */
  subdir: 'new' | 'cur';
  name: string;
  deleted: boolean;
  /** Sent whole with RETR: moved to cur/ with the S flag at QUIT. */
  retrieved: boolean;
}

export interface UpdateResult {
  readonly deleted: number;
  /** Deletions that failed (the files are still there). */
  readonly failed: number;
  readonly moved: number;
}

/** qmail-pop3d removes tmp/ files unused this long: deliveries that died half-way. */
const TMP_MAX_AGE_MS = 36 * 3600 * 1000;
/** File system calls between two yields to the event loop. */
const SLICE = 256;
/** Files read at the same time to find a size the name does not give. */
const READ_PARALLEL = 8;
const READ_CHUNK = 64 * 1024;

/** Wire sizes computed by reading a file, by base name and stored size (both survive the move to cur/). */
const sizeCache = new Map<string, number>();
const SIZE_CACHE_MAX = 200_000;

/** The name without the `:2,FLAGS` info part: what stays the same when a message moves to cur/. */
export function baseName(name: string): string {
  const colon = name.indexOf(':');
  return colon === -1 ? name : name.slice(0, colon);
}

/** RFC 1939 unique-id: 1 to 70 octets in 0x21-0x7E; a base name that is not one is hashed. */
export function uidFor(name: string): string {
  const base = baseName(name);
  if (base.length > 0 && base.length <= 70 && /^[\x21-\x7e]+$/.test(base)) return base;
  return createHash('md5').update(base).digest('hex');
}

/** The wire size a Maildir++ / Dovecot name carries (`,W=1234`), if any. */
export function sizeFromName(name: string): number | undefined {
  const m = /,W=(\d+)(?:,|$)/.exec(baseName(name));
  return m ? Number(m[1]) : undefined;
}

/** The name a message gets in cur/ once read: its info part with the S (seen) flag added. */
export function seenName(name: string): string {
  const colon = name.indexOf(':');
  if (colon === -1) return `${name}:2,S`;
  const info = name.slice(colon + 1);
  if (!info.startsWith('2,')) return name;
  const flags = new Set(info.slice(2));
  flags.add('S');
  return `${name.slice(0, colon)}:2,${[...flags].sort().join('')}`;
}

/** The stored size a Maildir++ name carries (`,S=1234`): what `maildirsize` counts. */
function storedSize(name: string): number | undefined {
  const m = /,S=(\d+)(?:,|$)/.exec(baseName(name));
  return m ? Number(m[1]) : undefined;
}

/**
 * Maildir++: whoever removes messages from a mailbox with a `maildirsize`
 * appends their negative size and count, so the quota a delivery agent (or
 * Dovecot) reads stays right without a recount. A mailbox without the file
 * has no quota to keep: none is made. One write with O_APPEND, as every
 * writer of the file does, so lines never interleave.
 */
function recordRemoval(root: string, removed: { bytes: number; count: number }): void {
  let fd: number;
  try {
    fd = fs.openSync(path.join(root, 'maildirsize'), fs.constants.O_WRONLY | fs.constants.O_APPEND);
  } catch {
    return;
  }
  try {
    fs.writeSync(fd, `-${removed.bytes} -${removed.count}\n`);
  } catch {
    // A line missing is healed by the next recount (the file is rebuilt every 15 minutes at most).
  } finally {
    fs.closeSync(fd);
  }
}

/** One file as a scan found it; shared between sessions through the listing cache, so never changed. */
interface Entry {
  readonly subdir: 'new' | 'cur';
  readonly name: string;
  readonly mtime: number;
  readonly uid: string;
  readonly size: number;
}

interface Listing {
  /** The directory as it was when listed (inode and mtime): any file added, removed or renamed changes it. */
  readonly stamp: string;
  readonly entries: readonly Entry[];
}

/**
 * The last listing of each new/ and cur/ directory, used again while the
 * directory has not changed (Dovecot does the same). A delivery changes
 * new/ only: the big cur/ of a user who keeps mail is not listed again.
 */
const listings = new Map<string, Listing>();
const LISTINGS_MAX = 2_000;
/**
 * A directory changed this recently may change again within the same tick
 * of the file system clock without its mtime moving: such a listing is not
 * kept.
 */
const SETTLE_MS = 2_000;

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

async function listDir(dir: string): Promise<string[]> {
  return (await listEntries(dir)).map((d) => d.name);
}

async function listEntries(dir: string): Promise<fs.Dirent[]> {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (err) {
    // A Maildir nobody delivered to yet has no new/ or cur/: an empty mailbox, not an error.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/**
 * Delivery time in milliseconds from a Maildir name (`<sec>.M<usec>P...`,
 * or `<sec>.<anything>`): the time the delivering program wrote into it,
 * which orders messages as their mtimes would without a stat per file.
 */
export function timeFromName(name: string): number | undefined {
  const m = /^(\d{9,11})\.(?:M(\d{1,6})P)?/.exec(name);
  if (!m) return undefined;
  return Number(m[1]) * 1000 + (m[2] ? Number(m[2]) / 1000 : 0);
}

async function countWireSize(file: string): Promise<number | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const counter = new WireSizeCounter();
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    for (;;) {
      const { bytesRead } = await handle.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      counter.add(buf.subarray(0, bytesRead));
    }
    return counter.size;
  } catch {
    return undefined;
  } finally {
    await handle.close();
  }
}

function remember(key: string, size: number): void {
  if (sizeCache.size >= SIZE_CACHE_MAX) {
    const oldest = sizeCache.keys().next().value;
    if (oldest !== undefined) sizeCache.delete(oldest);
  }
  sizeCache.set(key, size);
}

/** One directory's listing, from the cache while the directory is unchanged. */
async function listing(root: string, subdir: 'new' | 'cur'): Promise<readonly Entry[]> {
  const dir = path.join(root, subdir);
  const st = fs.statSync(dir, { bigint: true, throwIfNoEntry: false });
  if (!st) return []; // a Maildir nobody delivered to yet: an empty mailbox, not an error
  // Taken before listing: a change during the scan then shows as a different stamp next time.
  const stamp = `${st.ino}:${st.mtimeNs}`;
  const cached = listings.get(dir);
  if (cached?.stamp === stamp) return cached.entries;
  const entries = await scan(dir, subdir);
  listings.delete(dir);
  if (Date.now() - Number(st.mtimeMs) >= SETTLE_MS) {
    if (listings.size >= LISTINGS_MAX) listings.delete(listings.keys().next().value!);
    listings.set(dir, { stamp, entries });
  }
  return entries;
}

/** The messages in one directory with their sizes and ids. Files that vanish meanwhile are left out. */
async function scan(dir: string, subdir: 'new' | 'cur'): Promise<Entry[]> {
  const found: Array<{ name: string; mtime: number; stored: number }> = [];
  let calls = 0;
  for (const dirent of await listEntries(dir)) {
    const name = dirent.name;
    if (name.startsWith('.')) continue;
    // A name that carries its delivery time and wire size needs no stat at all (the d_type
    // says it is a file): a first login to 10,000 messages is two readdirs.
    const time = dirent.isFile() ? timeFromName(name) : undefined;
    if (time !== undefined && sizeFromName(name) !== undefined) {
      found.push({ name, mtime: time, stored: -1 });
      continue;
    }
    // Plain concatenation: path.join's normalising showed up in the profile at 10,000 files.
    const st = fs.statSync(`${dir}/${name}`, { throwIfNoEntry: false });
    if (st?.isFile()) found.push({ name, mtime: time ?? st.mtimeMs, stored: st.size });
    if (++calls % SLICE === 0) await yieldToLoop();
  }
  const sizes = found.map((e) => sizeFromName(e.name) ?? sizeCache.get(`${baseName(e.name)}\0${e.stored}`));
  const unknown = sizes.flatMap((s, i) => (s === undefined ? [i] : []));
  let next = 0;
  const worker = async () => {
    while (next < unknown.length) {
      const i = unknown[next++]!;
      const e = found[i]!;
      const size = await countWireSize(`${dir}/${e.name}`);
      sizes[i] = size;
      if (size !== undefined) remember(`${baseName(e.name)}\0${e.stored}`, size);
    }
  };
  await Promise.all(Array.from({ length: Math.min(READ_PARALLEL, unknown.length) }, worker));
  const entries: Entry[] = [];
  found.forEach((e, i) => {
    const size = sizes[i];
    if (size !== undefined) entries.push({ subdir, name: e.name, mtime: e.mtime, uid: uidFor(e.name), size }); // undefined: unreadable or gone since the stat
  });
  return entries;
}

/**
 * One buffer for every whole-message read of the process: a RETR reads its
 * file here and encodes it out again before anything else runs, so no
 * message costs an allocation of its own (at 10,000 RETRs those were a
 * good share of the garbage collector's work). Grows to the largest message
 * read whole.
 */
let scratch = Buffer.allocUnsafeSlow(64 * 1024);

/**
 * Reads a file whose stored size the name gives (`,S=`) with one read of one
 * more octet than that: a short read is the end of the file, so no fstat and
 * no second read. A name without S=, or a file bigger than it says, is read
 * the ordinary way. The result may be a view of `scratch`: valid until the
 * next call.
 */
function readWhole(file: string): Buffer {
  const stored = /,S=(\d+)/.exec(file.slice(file.lastIndexOf('/')))?.[1];
  if (stored === undefined) return fs.readFileSync(file);
  const want = Number(stored) + 1;
  if (scratch.length < want) scratch = Buffer.allocUnsafeSlow(Math.max(want, scratch.length * 2));
  const fd = fs.openSync(file, 'r');
  try {
    const n = fs.readSync(fd, scratch, 0, want, 0);
    return n < want ? scratch.subarray(0, n) : fs.readFileSync(file);
  } finally {
    fs.closeSync(fd);
  }
}

export class MaildirBox {
  private constructor(
    readonly root: string,
    readonly messages: readonly Pop3Message[],
  ) {}

  static async open(root: string): Promise<MaildirBox> {
    const entries = [...(await listing(root, 'new')), ...(await listing(root, 'cur'))];
    entries.sort((a, b) => a.mtime - b.mtime || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const messages = entries.map((e, i): Pop3Message => ({ number: i + 1, uid: e.uid, size: e.size, subdir: e.subdir, name: e.name, deleted: false, retrieved: false }));
    return new MaildirBox(root, messages);
  }

  get(n: number): Pop3Message | undefined {
    return this.messages[n - 1];
  }

  /** Messages not marked deleted, and their total wire size. */
  stat(): { count: number; octets: number } {
    let count = 0;
    let octets = 0;
    for (const m of this.messages) {
      if (m.deleted) continue;
      count++;
      octets += m.size;
    }
    return { count, octets };
  }

  pathOf(m: Pop3Message): string {
    // Plain concatenation: path.join's normalising showed in the RETR profile.
    return `${this.root}/${m.subdir}/${m.name}`;
  }

  /**
   * Opens a message for reading. Another program (an IMAP server, a mail
   * client over a shared directory) may have moved it to cur/ or changed its
   * flags since the scan; the file is then found by its base name.
   */
  async openMessage(m: Pop3Message): Promise<FileHandle | undefined> {
    try {
      return await open(this.pathOf(m), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (!(await this.relocate(m))) return undefined;
    try {
      return await open(this.pathOf(m), 'r');
    } catch {
      return undefined;
    }
  }

  /**
   * A whole message at once, for the messages small enough to send in one
   * write: one synchronous read is a few microseconds, where open, read and
   * close through the thread pool cost a round trip each per RETR. The
   * buffer may be shared by every session: it must be used up before the
   * next await. 'gone' when the file is not where the listing says (see relocate).
   */
  readShared(m: Pop3Message): Buffer | 'gone' {
    try {
      return readWhole(this.pathOf(m));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return 'gone';
    }
  }

  /**
   * UPDATE: removes what was deleted, marks what was read as seen: moved from
   * new/ to cur/ with the S flag, or given the S flag in cur/ (where an IMAP
   * server may have moved it), keeping every flag letter already there.
   * Deletions are taken off `maildirsize` when the mailbox has one.
   */
  async update(): Promise<UpdateResult> {
    let deleted = 0;
    let failed = 0;
    let moved = 0;
    let calls = 0;
    const removed = { bytes: 0, count: 0 };
    for (const m of this.messages) {
      if (m.deleted) {
        const bytes = storedSize(m.name) ?? fs.statSync(this.pathOf(m), { throwIfNoEntry: false })?.size;
        if (await this.unlink(m)) {
          deleted++;
          if (bytes !== undefined) {
            removed.bytes += bytes;
            removed.count++;
          }
        } else failed++;
      } else if (m.retrieved && (m.subdir === 'new' || seenName(m.name) !== m.name)) {
        if (await this.markSeen(m)) moved++;
      } else {
        continue;
      }
      if (++calls % SLICE === 0) await yieldToLoop();
    }
    if (removed.count) recordRemoval(this.root, removed);
    return { deleted, failed, moved };
  }

  /** Renames a retrieved message to its seen name; once more if another program renamed it meanwhile. */
  private async markSeen(m: Pop3Message): Promise<boolean> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const target = seenName(m.name);
      if (m.subdir === 'cur' && target === m.name) return false;
      try {
        fs.renameSync(this.pathOf(m), path.join(this.root, 'cur', target));
        m.subdir = 'cur';
        m.name = target;
        return true;
      } catch (err) {
        // Gone from where the listing had it: moved or re-flagged by an IMAP server. Its
        // flags are those of the name found now; still unseen to the next session otherwise.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !(await this.relocate(m))) return false;
      }
    }
    return false;
  }

  private async unlink(m: Pop3Message): Promise<boolean> {
    try {
      fs.unlinkSync(this.pathOf(m));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return false;
    }
    // Gone from where it was: moved by someone else (delete it there), or already deleted.
    if (!(await this.relocate(m))) return true;
    try {
      fs.unlinkSync(this.pathOf(m));
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ENOENT';
    }
  }

  /** Finds a message another program moved or re-flagged since the scan; false when it is gone. */
  async relocate(m: Pop3Message): Promise<boolean> {
    const base = baseName(m.name);
    for (const subdir of ['cur', 'new'] as const) {
      const found = (await listDir(path.join(this.root, subdir))).find((n) => n === base || n.startsWith(`${base}:`));
      if (found) {
        m.subdir = subdir;
        m.name = found;
        return true;
      }
    }
    return false;
  }
}

/** Removes files in tmp/ left by deliveries that died more than 36 hours ago; returns how many. */
export async function cleanTmp(root: string, now = Date.now()): Promise<number> {
  const dir = path.join(root, 'tmp');
  let removed = 0;
  let calls = 0;
  for (const name of await listDir(dir)) {
    const file = path.join(dir, name);
    const st = fs.statSync(file, { throwIfNoEntry: false });
    // qmail-pop3d goes by the access time: a delivery still writing keeps touching its file.
    if (st?.isFile() && now - Math.max(st.atimeMs, st.mtimeMs) > TMP_MAX_AGE_MS) {
      try {
        fs.unlinkSync(file);
        removed++;
      } catch {
        // someone else removed it, or may not: either way not this session's problem
      }
    }
    if (++calls % SLICE === 0) await yieldToLoop();
  }
  return removed;
}
