/**
 * Checking what a POP3 client offers as proof: the clear password of
 * USER/PASS and SASL PLAIN, or APOP's digest over the greeting's timestamp.
 * The auth plugin only ever hands `verify` the secret it stores.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

/** Equal without leaking, through timing, how much of a guess was right. */
export function safeEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

/** APOP (RFC 1939 section 7): the client proves the secret with md5(timestamp + secret). */
export function apopVerifier(timestamp: string, digest: string): (secret: string) => boolean {
  const expected = digest.toLowerCase();
  return (secret) => safeEqual(createHash('md5').update(timestamp + secret, 'utf8').digest('hex'), expected);
}

export function passwordVerifier(password: string): (secret: string) => boolean {
  return (secret) => safeEqual(secret, password);
}

export interface PlainResponse {
  /** Who to act as; empty for "myself". */
  readonly authzid: string;
  readonly authcid: string;
  readonly password: string;
}

/** An RFC 4616 PLAIN message in base64, or undefined when it is not one. */
export function decodePlain(base64: string): PlainResponse | undefined {
  // Buffer.from ignores what is not base64; a client sending junk must get -ERR, not a login attempt.
  if (base64.length === 0 || base64.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(base64)) return undefined;
  const parts = Buffer.from(base64, 'base64').toString('utf8').split('\0');
  if (parts.length !== 3) return undefined;
  const [authzid, authcid, password] = parts as [string, string, string];
  if (!authcid || !password) return undefined;
  return { authzid, authcid, password };
}
