/**
 * One POP3 session per mailbox (RFC 1939 section 8: the maildrop is locked
 * while a session has it). Two sessions on one Maildir would number the same
 * files differently and each delete what the other still lists.
 *
 * Two locks are taken. The first is per process, shared by every POP3
 * listener (pop3 and pop3s reach the same Maildirs), keyed by the real path
 * so two spellings of one directory are one mailbox: it answers a second
 * session of this process without touching the disk. The second is a lock
 * file in the Maildir (core/dotlock.ts: link() and link count, safe on NFS),
 * which other processes and other hosts sharing the mailboxes see.
 */
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { takeDotlock } from '../dotlock.js';

/** The lock file in a Maildir's top directory. No leading dot: Maildir++ readers (Dovecot) take dot entries for folders. */
export const LOCK_FILE = 'yubin-pop3.lock';

const held = new Set<string>();

/** The key a Maildir is locked under. */
export async function mailboxKey(maildir: string): Promise<string> {
  try {
    return await realpath(maildir);
  } catch {
    // Not there yet (nothing delivered): it can only become this path.
    return path.resolve(maildir);
  }
}

/** Takes the lock; returns its release (idempotent), or undefined when another session holds it. */
export function lockMailbox(key: string): (() => void) | undefined {
  if (held.has(key)) return undefined;
  held.add(key);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    held.delete(key);
  };
}

/** Mailbox locks kept outside this process: the cluster's primary, so two workers never open one maildrop. */
export interface SharedMailboxLocks {
  lock(key: string): Promise<(() => void) | undefined>;
}

let shared: SharedMailboxLocks | undefined;

/** A cluster worker hands its locks to the primary (set once, at the worker's start). */
export function shareMailboxLocks(locks: SharedMailboxLocks | undefined): void {
  shared = locks;
}

/** lockMailbox, or the primary's lock in a cluster worker (then a promise). */
export function takeMailbox(key: string): (() => void) | undefined | Promise<(() => void) | undefined> {
  return shared ? shared.lock(key) : lockMailbox(key);
}

/**
 * The mailbox for one session, against every other session: in this process
 * (or cluster), then on disk for other processes and hosts. Undefined when
 * another session has it.
 */
export async function takeMailboxEverywhere(key: string): Promise<(() => void) | undefined> {
  const local = await takeMailbox(key);
  if (!local) return undefined;
  let disk;
  try {
    disk = await takeDotlock(path.join(key, LOCK_FILE));
  } catch (err) {
    // No Maildir yet (nothing delivered, nobody made it), or one this process cannot change
    // (read-only): no files for two sessions to disagree on.
    if (['ENOENT', 'EACCES', 'EROFS'].includes((err as NodeJS.ErrnoException).code ?? '')) return local;
    local();
    throw err;
  }
  if (!disk) {
    local();
    return undefined;
  }
  return () => {
    disk.release();
    local();
  };
}
