/**
 * One POP3 session per mailbox (RFC 1939 section 8: the maildrop is locked
 * while a session has it). Two sessions on one Maildir would number the same
 * files differently and each delete what the other still lists.
 *
 * The lock is per process, shared by every POP3 listener (pop3 and pop3s reach
 * the same Maildirs), keyed by the real path so two spellings of one
 * directory are one mailbox.
 */
import { realpath } from 'node:fs/promises';
import path from 'node:path';

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
