/**
 * Logins kept in memory: a random id in the `yubin_session` cookie, a CSRF
 * token per session, an absolute expiry. A restart logs everybody out, which
 * is the safe direction. Sessions without an address are pre-login ones: they
 * only carry the CSRF token the login form needs.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';

export const COOKIE = 'yubin_session';
/** A login form left open longer than this must be reloaded. */
const PRE_LOGIN_TTL = 3_600_000;
/** Unauthenticated GET /login makes sessions: bounded, so nobody can fill the memory with them. */
const MAX_SESSIONS = 10_000;

export interface Session {
  readonly id: string;
  readonly csrf: string;
  /** The logged-in address; undefined before login. */
  readonly address: string | undefined;
  readonly expires: number;
  /** One message shown on the next page (after a form's redirect). */
  flash: { readonly kind: 'ok' | 'error'; readonly text: string; readonly detail?: string | undefined } | undefined;
}

const randomId = () => randomBytes(32).toString('base64url');

export class Sessions {
  private readonly map = new Map<string, Session>();

  constructor(
    private readonly ttl: number,
    private readonly now: () => number,
  ) {}

  get(id: string | undefined): Session | undefined {
    if (!id) return undefined;
    const s = this.map.get(id);
    if (s && s.expires <= this.now()) {
      this.map.delete(id);
      return undefined;
    }
    return s;
  }

  /** A fresh session; a login always gets a new id, so an id planted before login is worth nothing after. */
  create(address: string | undefined): Session {
    this.sweep();
    const s: Session = { id: randomId(), csrf: randomId(), address, expires: this.now() + (address ? this.ttl : PRE_LOGIN_TTL), flash: undefined };
    this.map.set(s.id, s);
    return s;
  }

  delete(id: string): void {
    this.map.delete(id);
  }

  /** Ends every session of an address (its account was deleted). */
  deleteAddress(address: string): void {
    for (const [id, s] of this.map) if (s.address === address) this.map.delete(id);
  }

  private sweep(): void {
    const now = this.now();
    for (const [id, s] of this.map) if (s.expires <= now) this.map.delete(id);
    // Still full: drop the oldest pre-login sessions first, then the oldest of any kind (Map keeps insertion order).
    for (const [id, s] of this.map) {
      if (this.map.size < MAX_SESSIONS) break;
      if (!s.address) this.map.delete(id);
    }
    for (const id of this.map.keys()) {
      if (this.map.size < MAX_SESSIONS) break;
      this.map.delete(id);
    }
  }
}

/** Constant-time comparison of the presented CSRF token with the session's. */
export function csrfMatches(session: Session, presented: unknown): boolean {
  if (typeof presented !== 'string' || !presented) return false;
  const a = Buffer.from(presented);
  const b = Buffer.from(session.csrf);
  return a.length === b.length && timingSafeEqual(a, b);
}
