/**
 * Outbound SMTP sessions kept open between messages, per destination, the
 * way Postfix's scache does: many messages to one domain share a few
 * sessions instead of paying a TCP connect, a greeting, EHLO and a TLS
 * handshake each. A session goes back to the cache after a clean
 * transaction, is probed with RSET before it is used again, and is closed
 * (QUIT) after `idleTime` unused, after `maxMessages`, or once it is
 * `maxAge` old; one the server closed is simply forgotten.
 *
 * The key says what the session is good for: the destination (a domain's
 * MX, or a relay) and the security it was opened with, so a REQUIRETLS
 * message never inherits a session made for opportunistic TLS.
 */
import type SMTPConnection from 'nodemailer/lib/smtp-connection';

export interface ConnectionReuse {
  /** Messages over one session before it is closed (Postfix's smtp_connection_reuse_count_limit). */
  readonly maxMessages: number;
  /** Closed after this long unused (smtp_connection_cache_time_limit). */
  readonly idleTime: number;
  /** Not handed out again once this old (smtp_connection_reuse_time_limit). */
  readonly maxAge: number;
}

export interface CachedSession {
  readonly conn: SMTPConnection;
  /** The server's name, for outcomes and logs. */
  readonly host: string;
  readonly opened: number;
  /** Transactions sent over it so far. */
  messages: number;
}

interface Idle {
  readonly session: CachedSession;
  readonly timer: NodeJS.Timeout;
  readonly onEnd: () => void;
}

export class ConnectionCache {
  private readonly idle = new Map<string, Idle[]>();
  private closed = false;
  /** Sessions opened and reused: their ratio is what the cache saved. */
  opened = 0;
  reused = 0;

  constructor(private readonly limits: () => ConnectionReuse) {}

  /** An idle session for this key that still answers RSET, or undefined. */
  async take(key: string): Promise<CachedSession | undefined> {
    const list = this.idle.get(key);
    while (list?.length) {
      const entry = list.pop()!;
      if (!list.length) this.idle.delete(key);
      this.forget(entry);
      const { session } = entry;
      if (Date.now() - session.opened >= this.limits().maxAge) {
        session.conn.quit();
        continue;
      }
      if (await rset(session.conn)) {
        this.reused++;
        return session;
      }
      session.conn.close();
    }
    return undefined;
  }

  /** Counts a session made for a delivery (for the reuse ratio). */
  madeNew(): void {
    this.opened++;
  }

  /** After a transaction: keeps the session for the next message to this key, or closes it when it has done enough. */
  release(key: string, session: CachedSession, usable: boolean): void {
    const { maxMessages, idleTime, maxAge } = this.limits();
    if (!usable || this.closed || idleTime <= 0 || session.messages >= maxMessages || Date.now() - session.opened >= maxAge) {
      if (usable) session.conn.quit();
      else session.conn.close();
      return;
    }
    const onEnd = () => this.drop(key, entry);
    const timer = setTimeout(() => {
      this.drop(key, entry);
      session.conn.quit();
    }, idleTime);
    timer.unref();
    const entry: Idle = { session, timer, onEnd };
    // A server that hangs up on an idle session: forgotten, not reused.
    session.conn.once('end', onEnd);
    let list = this.idle.get(key);
    if (!list) this.idle.set(key, (list = []));
    list.push(entry);
  }

  /** Idle sessions now, for tests and status. */
  size(): number {
    let n = 0;
    for (const list of this.idle.values()) n += list.length;
    return n;
  }

  /** QUIT to every idle session; nothing is cached after this. */
  close(): void {
    this.closed = true;
    for (const list of this.idle.values()) {
      for (const entry of list) {
        this.forget(entry);
        entry.session.conn.quit();
      }
    }
    this.idle.clear();
  }

  private drop(key: string, entry: Idle): void {
    const list = this.idle.get(key);
    const i = list?.indexOf(entry) ?? -1;
    if (i < 0) return;
    list!.splice(i, 1);
    if (!list!.length) this.idle.delete(key);
    this.forget(entry);
  }

  private forget(entry: Idle): void {
    clearTimeout(entry.timer);
    entry.session.conn.removeListener('end', entry.onEnd);
  }
}

/** How long an RSET may take before the session counts as dead. */
const RSET_TIMEOUT_MS = 10_000;

/**
 * RSET, answered within RSET_TIMEOUT_MS: false for a session that is gone.
 * nodemailer may never call back for a socket that died (its 'end' comes
 * instead), so the end and a timer answer too.
 */
export function rset(conn: SMTPConnection): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      conn.removeListener('end', onEnd);
      resolve(ok);
    };
    const onEnd = () => finish(false);
    const timer = setTimeout(() => finish(false), RSET_TIMEOUT_MS);
    conn.once('end', onEnd);
    try {
      conn.reset((err) => finish(!err));
    } catch {
      finish(false);
    }
  });
}
