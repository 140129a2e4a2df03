/**
 * A lock file that holds across hosts sharing a directory over NFS, made the
 * way liblockfile and Dovecot's dotlocks make theirs:
 *
 * 1. write a file with a name no other process can pick (host, pid, random)
 *    holding "host pid";
 * 2. link() it to the lock's name. link is atomic on the NFS server, but its
 *    reply can be lost and the retried call then fails with EEXIST although
 *    it worked: so the answer is not trusted, the link count of our own file
 *    is (2 means the lock's name is ours);
 * 3. remove our file.
 *
 * O_EXCL is not used: NFSv2 and some clients do not honour it across hosts.
 *
 * A holder touches the lock while it holds it; a lock not touched for
 * `staleMs` belongs to a host or process that died and is taken over. The
 * age is measured on the file server's clock (against the mtime of the file
 * just written), so clocks that disagree between hosts do not matter. On
 * the same host a lock whose process is gone is stale at once.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, unlinkSync } from 'node:fs';
import { link, lstat, readFile, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';

export interface DotlockOptions {
  /** A lock not touched for this long is taken over. */
  readonly staleMs?: number;
  /** How often a held lock is touched; well under staleMs. */
  readonly touchMs?: number;
}

export interface Dotlock {
  /**
   * Stops touching and removes the lock if it is still ours; idempotent.
   * Synchronous, so a client that logs out and straight back in finds it gone.
   */
  release(): void;
}

const STALE_MS = 120_000;
const TOUCH_MS = 30_000;
const HOST = os.hostname();

/** Is a process of this host alive? (ESRCH: no such process; EPERM: alive, someone else's.) */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function linkCount(file: string): Promise<number> {
  return (await lstat(file)).nlink;
}

/**
 * Whether the lock at `file` is stale: untouched for staleMs by the server's
 * clock (`now` is the mtime of a file we just wrote), or held by a process
 * of this host that is gone.
 */
async function isStale(file: string, now: number, staleMs: number): Promise<boolean> {
  let text: string;
  let mtime: number;
  try {
    mtime = (await stat(file)).mtimeMs;
    text = await readFile(file, 'utf8');
  } catch (err) {
    // Gone meanwhile: free, try again.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw err;
  }
  if (now - mtime > staleMs) return true;
  const [host, pid] = text.trim().split(' ');
  return host === HOST && Number(pid) > 0 && Number(pid) !== process.pid && !alive(Number(pid));
}

/**
 * Takes the lock at `file` (its directory must exist), or undefined when a
 * live holder has it. Throws for errors other than "held" (no such directory,
 * no permission): the caller decides whether to go on without it.
 */
export async function takeDotlock(file: string, options: DotlockOptions = {}): Promise<Dotlock | undefined> {
  const staleMs = options.staleMs ?? STALE_MS;
  const touchMs = options.touchMs ?? TOUCH_MS;
  const token = `${HOST} ${process.pid} ${randomBytes(8).toString('hex')}\n`;
  // The host's name is in the temporary name so two hosts never write the same one.
  const mine = `${file}.${HOST.replace(/[/:\s]/g, '_')}.${process.pid}.${randomBytes(6).toString('hex')}`;
  await writeFile(mine, token, { mode: 0o600 });
  let got = false;
  try {
    // Twice at most: a stale lock found the first time is removed and the link tried again.
    for (let attempt = 0; attempt < 2 && !got; attempt++) {
      try {
        await link(mine, file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      got = (await linkCount(mine)) === 2;
      if (got || attempt > 0) break;
      const now = (await stat(mine)).mtimeMs;
      if (!(await isStale(file, now, staleMs))) break;
      // Two takers may both find it stale; one of them then removes the other's fresh lock.
      // The window is one unlink + link long, after at least staleMs of silence: accepted, as liblockfile does.
      await unlink(file).catch(() => undefined);
    }
  } finally {
    await unlink(mine).catch(() => undefined);
  }
  if (!got) return undefined;

  const touch = setInterval(() => {
    const t = new Date();
    utimes(file, t, t).catch(() => undefined);
  }, touchMs);
  touch.unref();
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      clearInterval(touch);
      try {
        // Only our own: after a pause longer than staleMs someone else may hold it now.
        if (readFileSync(file, 'utf8') === token) unlinkSync(file);
      } catch {
        // gone already
      }
    },
  };
}
