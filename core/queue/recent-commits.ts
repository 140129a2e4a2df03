/**
 * Messages just committed by this process, kept in memory for their first
 * delivery attempt: the envelope as a restart would read it, and the stored
 * message when it arrived in memory (the spool holds a small message until
 * commit anyway). The scheduler takes an entry when it loads the message, so
 * a message delivered as it arrives is never read back from the spool: that
 * was an open, a stat, two reads and a close for the envelope, then an open,
 * a read and a close for the message, each a round trip through libuv's pool.
 *
 * Bounded in bytes, the oldest out first: a message that waits longer (a
 * backlog, delivery held, a full queue) is read from disk as before, and the
 * spool file stays the only record that counts.
 */
import type { Envelope } from './spool.js';

export interface Committed {
  readonly envelope: Envelope;
  /** The spool file's message part (envelope.size octets), when the message was held in memory. */
  readonly message?: Buffer;
}

/** What an entry is counted as beyond its message: the parsed envelope and the map's own share. */
const ENTRY_OVERHEAD = 1024;

/** The default bound: a burst of about 5,000 typical (5 KB) messages. */
const RECENT_COMMITS_MAX_BYTES = 32 * 1024 * 1024;

export class RecentCommits {
  private readonly entries = new Map<string, Committed>();
  private bytes = 0;

  constructor(private readonly maxBytes = RECENT_COMMITS_MAX_BYTES) {}

  get size(): number {
    return this.entries.size;
  }

  put(id: string, committed: Committed): void {
    const cost = costOf(committed);
    if (cost > this.maxBytes) return;
    this.take(id);
    this.entries.set(id, committed);
    this.bytes += cost;
    // A Map iterates in insertion order: the first entries are the oldest.
    for (const [oldest, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= costOf(entry);
    }
  }

  /** The entry, which leaves the store: it is used once, by the message's first load. */
  take(id: string): Committed | undefined {
    const entry = this.entries.get(id);
    if (entry) {
      this.entries.delete(id);
      this.bytes -= costOf(entry);
    }
    return entry;
  }
}

function costOf(c: Committed): number {
  return ENTRY_OVERHEAD + (c.message?.length ?? 0);
}
