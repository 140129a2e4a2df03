/**
 * Password hashing and checking for vpopmail-style accounts.
 *
 * New passwords get an scrypt hash in a self-describing string
 * (`$scrypt$ln=15,r=8,p=1$<salt>$<hash>`, unpadded base64). Existing vpasswd
 * files hold MD5-crypt (`$1$`, the vpopmail 5.4 default), SHA-crypt (`$5$`,
 * `$6$`, later forks) or clear text, so those are verified too; callers should
 * call `needsRehash` after a successful login and store `hashPassword(...)`.
 *
 * MD5-crypt follows Poul-Henning Kamp's md5crypt and SHA-crypt Ulrich
 * Drepper's specification (SHA-crypt.txt); both are implemented here so that
 * no native crypt(3) binding is needed.
 *
 * Traditional DES crypt (13 characters) is deliberately not supported: Node
 * has no DES-based crypt(3) and it is not worth carrying one for hashes that
 * have been crackable for decades. Such accounts fail to verify; use
 * `isVerifiable` to find them and have their passwords reset.
 *
 * Passwords are hashed as their UTF-8 bytes, without Unicode normalisation
 * (crypt(3) and vpopmail do not normalise either).
 */
import { createHash, createHmac, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';

export type HashScheme = 'scrypt' | 'md5-crypt' | 'sha256-crypt' | 'sha512-crypt' | 'des-crypt' | 'clear' | 'unknown';

// ~90 ms per hash on the development machine; raise LN when hardware gets faster
// (needsRehash then upgrades stored hashes on the next successful login).
const SCRYPT_LN = 15;
const SCRYPT_R = 8;
const SCRYPT_P = 1;
const SCRYPT_KEYLEN = 32;
const SCRYPT_SALT_BYTES = 16;
// Stored hashes could carry absurd parameters; refuse rather than allocate without bound.
const SCRYPT_MAX_MEMORY = 256 * 1024 * 1024;

// SHA-crypt rounds: the spec clamps to [1000, 999999999]. Verifying a hash near
// the top would keep a CPU busy for minutes, so very high counts are refused.
const SHA_ROUNDS_DEFAULT = 5000;
const SHA_ROUNDS_MIN = 1000;
const SHA_ROUNDS_MAX = 999_999_999;
export const MAX_VERIFIED_SHA_ROUNDS = 1_000_000;

const ITOA64 = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const SCRYPT_RE = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/;
const DES_RE = /^[./0-9A-Za-z]{13}$/;
// Salts must be printable ASCII: the salt length limits are in bytes and the
// salt is copied verbatim into the result string.
const SALT_RE = /^[\x21-\x7e]*$/;

/** Which scheme a stored password field uses, judged from its shape alone. */
export function hashScheme(stored: string): HashScheme {
  if (stored.startsWith('$scrypt$')) return 'scrypt';
  if (stored.startsWith('$1$')) return 'md5-crypt';
  if (stored.startsWith('$5$')) return 'sha256-crypt';
  if (stored.startsWith('$6$')) return 'sha512-crypt';
  // bcrypt, yescrypt, ... and anything else in crypt's `$id$` namespace.
  if (stored.startsWith('$')) return 'unknown';
  if (DES_RE.test(stored)) return 'des-crypt';
  return 'clear';
}

/** True when the stored value is (taken to be) a clear-text password. */
export function isClearTextHash(stored: string): boolean {
  return hashScheme(stored) === 'clear';
}

/**
 * Whether `verifyPassword` can ever succeed for this stored value. False for
 * DES crypt (unsupported, see the module comment), unknown `$id$` schemes and
 * the empty string (an empty field locks the account instead of opening it).
 */
export function isVerifiable(stored: string): boolean {
  if (stored === '') return false;
  const scheme = hashScheme(stored);
  return scheme !== 'des-crypt' && scheme !== 'unknown';
}

/** Hash a new password with our current scrypt parameters. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SCRYPT_SALT_BYTES);
  const key = await scryptAsync(Buffer.from(password, 'utf8'), salt, SCRYPT_KEYLEN, SCRYPT_LN, SCRYPT_R, SCRYPT_P);
  return `$scrypt$ln=${SCRYPT_LN},r=${SCRYPT_R},p=${SCRYPT_P}$${b64(salt)}$${b64(key)}`;
}

/**
 * Check a password against a stored vpasswd field. Never throws for malformed
 * input; anything it cannot verify is simply false.
 *
 * A stored value that does not start with `$` and is not shaped like a DES hash
 * is compared as clear text. When the clear password comes from vpasswd's
 * separate clear-text field, use `clearTextEquals` instead: a 13-character
 * clear password would otherwise be mistaken for DES crypt.
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  if (typeof password !== 'string' || typeof stored !== 'string' || !isVerifiable(stored)) return false;
  const scheme = hashScheme(stored);
  if (scheme === 'clear') return clearTextEquals(password, stored);
  if (scheme === 'scrypt') return verifyScrypt(password, stored);
  const computed = await unixCrypt(password, stored);
  return computed !== undefined && constantTimeEqual(computed, stored);
}

/** True unless the stored value is an scrypt hash with exactly our current parameters. */
export function needsRehash(stored: string): boolean {
  const p = parseScrypt(stored);
  return !p || p.ln !== SCRYPT_LN || p.r !== SCRYPT_R || p.p !== SCRYPT_P
    || p.salt.length < SCRYPT_SALT_BYTES || p.hash.length !== SCRYPT_KEYLEN;
}

/** Constant-time comparison of a candidate with a stored clear-text password. */
export function clearTextEquals(password: string, clear: string): boolean {
  if (clear === '') return false;
  return constantTimeEqual(password, clear);
}

/**
 * Compare two strings without leaking where they differ. Both sides are hashed
 * first so that timingSafeEqual always sees equal-length buffers (and the
 * length of the secret is not revealed either).
 */
export function constantTimeEqual(a: string, b: string): boolean {
  const da = createHash('sha256').update(a, 'utf8').digest();
  const db = createHash('sha256').update(b, 'utf8').digest();
  return timingSafeEqual(da, db);
}

/** CRAM-MD5 (RFC 2195) response digest: HMAC-MD5 of the challenge keyed by the secret, lower-case hex. */
export function cramMd5Digest(secret: string, challenge: string): string {
  return createHmac('md5', Buffer.from(secret, 'utf8')).update(challenge, 'utf8').digest('hex');
}

/** APOP (RFC 1939) digest: MD5 of the greeting timestamp (with its angle brackets) followed by the secret, hex. */
export function apopDigest(timestamp: string, secret: string): string {
  return createHash('md5').update(timestamp + secret, 'utf8').digest('hex');
}

/**
 * crypt(3) for the `$1$`, `$5$` and `$6$` schemes: `setting` is either a salt
 * specification (`$6$rounds=10000$salt`) or a complete stored hash, exactly as
 * crypt(3) accepts. Returns undefined for other schemes, malformed settings or
 * SHA-crypt round counts above MAX_VERIFIED_SHA_ROUNDS.
 */
export async function unixCrypt(password: string, setting: string): Promise<string | undefined> {
  const pw = Buffer.from(password, 'utf8');
  if (setting.startsWith('$1$')) return md5Crypt(pw, setting);
  if (setting.startsWith('$5$')) return shaCrypt(pw, setting, 'sha256');
  if (setting.startsWith('$6$')) return shaCrypt(pw, setting, 'sha512');
  return undefined;
}

// ---------------------------------------------------------------------------
// scrypt

interface ScryptParams { ln: number; r: number; p: number; salt: Buffer; hash: Buffer }

function parseScrypt(stored: string): ScryptParams | undefined {
  const m = SCRYPT_RE.exec(stored);
  if (!m) return undefined;
  return { ln: Number(m[1]), r: Number(m[2]), p: Number(m[3]), salt: Buffer.from(m[4]!, 'base64'), hash: Buffer.from(m[5]!, 'base64') };
}

async function verifyScrypt(password: string, stored: string): Promise<boolean> {
  const s = parseScrypt(stored);
  if (!s) return false;
  const { ln, r, p, salt, hash } = s;
  // scrypt output is a prefix-consistent stream, so a shortened stored hash
  // would still "verify"; insist on at least our own 32 bytes.
  if (ln < 1 || ln > 24 || r < 1 || p < 1 || p > 16 || salt.length < 8 || hash.length < SCRYPT_KEYLEN || hash.length > 64) return false;
  if (128 * 2 ** ln * r > SCRYPT_MAX_MEMORY) return false;
  try {
    const key = await scryptAsync(Buffer.from(password, 'utf8'), salt, hash.length, ln, r, p);
    return timingSafeEqual(key, hash);
  } catch {
    return false;
  }
}

function scryptAsync(password: Buffer, salt: Buffer, keylen: number, ln: number, r: number, p: number): Promise<Buffer> {
  const N = 2 ** ln;
  // scrypt needs about 128*N*r bytes; Node refuses anything above maxmem (32 MiB by default).
  const options: ScryptOptions = { N, r, p, maxmem: 2 * 128 * N * r + 128 * r * p };
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function b64(buf: Buffer): string {
  return buf.toString('base64').replace(/=+$/, '');
}

// ---------------------------------------------------------------------------
// crypt(3) helpers shared by MD5-crypt and SHA-crypt

/** crypt's base64: 6 bits at a time, least significant first, over ./0-9A-Za-z. */
function to64(value: number, chars: number): string {
  let out = '';
  for (let i = 0; i < chars; i++) {
    out += ITOA64[value & 0x3f];
    value >>>= 6;
  }
  return out;
}

/** Encode a digest in groups of three bytes, in the scheme's own byte order. */
function encodeGroups(digest: Buffer, groups: readonly (readonly [number, number, number])[]): string {
  return groups.map(([a, b, c]) => to64((digest[a]! << 16) | (digest[b]! << 8) | digest[c]!, 4)).join('');
}

/** The salt of a crypt setting: up to the next `$` (or the end), at most `max` characters. */
function cryptSalt(rest: string, max: number): string | undefined {
  const end = rest.indexOf('$');
  const salt = (end === -1 ? rest : rest.slice(0, end)).slice(0, max);
  return SALT_RE.test(salt) ? salt : undefined;
}

// ---------------------------------------------------------------------------
// MD5-crypt (Poul-Henning Kamp, FreeBSD 1994)

const MD5_GROUPS = [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5]] as const;
const NUL = Buffer.alloc(1);

function md5(...parts: Buffer[]): Buffer {
  const h = createHash('md5');
  for (const part of parts) h.update(part);
  return h.digest();
}

function md5Crypt(pw: Buffer, setting: string): string | undefined {
  const magic = '$1$';
  const saltText = cryptSalt(setting.slice(magic.length), 8);
  if (saltText === undefined) return undefined;
  const salt = Buffer.from(saltText, 'latin1');

  const alternate = md5(pw, salt, pw);
  const ctx = createHash('md5').update(pw).update(magic).update(salt);
  for (let left = pw.length; left > 0; left -= 16) ctx.update(alternate.subarray(0, Math.min(left, 16)));
  // The original walks the bits of the length adding a NUL byte or the first
  // password byte; an accident of the C code that every implementation keeps.
  for (let bits = pw.length; bits > 0; bits >>>= 1) ctx.update(bits & 1 ? NUL : pw.subarray(0, 1));
  let digest = ctx.digest();

  // 1000 rounds to slow down brute force (the 1994 notion of expensive).
  for (let i = 0; i < 1000; i++) {
    const h = createHash('md5');
    h.update(i & 1 ? pw : digest);
    if (i % 3) h.update(salt);
    if (i % 7) h.update(pw);
    h.update(i & 1 ? digest : pw);
    digest = h.digest();
  }
  return `${magic}${saltText}$${encodeGroups(digest, MD5_GROUPS)}${to64(digest[11]!, 2)}`;
}

// ---------------------------------------------------------------------------
// SHA-crypt (Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512", 2007)

// Byte order of the final encoding, from the specification.
const SHA256_GROUPS = [
  [0, 10, 20], [21, 1, 11], [12, 22, 2], [3, 13, 23], [24, 4, 14],
  [15, 25, 5], [6, 16, 26], [27, 7, 17], [18, 28, 8], [9, 19, 29],
] as const;
const SHA512_GROUPS = [
  [0, 21, 42], [22, 43, 1], [44, 2, 23], [3, 24, 45], [25, 46, 4], [47, 5, 26], [6, 27, 48],
  [28, 49, 7], [50, 8, 29], [9, 30, 51], [31, 52, 10], [53, 11, 32], [12, 33, 54], [34, 55, 13],
  [56, 14, 35], [15, 36, 57], [37, 58, 16], [59, 17, 38], [18, 39, 60], [40, 61, 19], [62, 20, 41],
] as const;
const ROUNDS_RE = /^rounds=(\d+)\$/;

/** `length` bytes made of `block` repeated (the spec's P and S sequences). */
function repeatTo(block: Buffer, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let off = 0; off < length; off += block.length) block.copy(out, off, 0, Math.min(block.length, length - off));
  return out;
}

async function shaCrypt(pw: Buffer, setting: string, algorithm: 'sha256' | 'sha512'): Promise<string | undefined> {
  const id = algorithm === 'sha256' ? '$5$' : '$6$';
  const size = algorithm === 'sha256' ? 32 : 64;
  let rest = setting.slice(id.length);

  let rounds = SHA_ROUNDS_DEFAULT;
  let customRounds = false;
  const m = ROUNDS_RE.exec(rest);
  if (m) {
    // Out-of-range counts are clamped, not rejected, and the clamped value is what gets written out.
    rounds = Math.min(Math.max(Number(m[1]), SHA_ROUNDS_MIN), SHA_ROUNDS_MAX);
    customRounds = true;
    rest = rest.slice(m[0].length);
  }
  if (rounds > MAX_VERIFIED_SHA_ROUNDS) return undefined;
  const saltText = cryptSalt(rest, 16);
  if (saltText === undefined) return undefined;
  const salt = Buffer.from(saltText, 'latin1');
  const hash = (): ReturnType<typeof createHash> => createHash(algorithm);

  // Digest B = H(P S P).
  const b = hash().update(pw).update(salt).update(pw).digest();

  // Digest A = H(P S, then B for as many bytes as P has, then per bit of len(P): B for 1, P for 0).
  const a = hash().update(pw).update(salt).update(repeatTo(b, pw.length));
  for (let bits = pw.length; bits > 0; bits >>>= 1) a.update(bits & 1 ? b : pw);
  let c = a.digest();

  // P sequence: H(P repeated len(P) times), stretched/cut to len(P) bytes.
  const dp = hash();
  for (let i = 0; i < pw.length; i++) dp.update(pw);
  const pSeq = repeatTo(dp.digest(), pw.length);

  // S sequence: H(S repeated 16 + A[0] times), cut to len(S) bytes.
  const ds = hash();
  for (let i = 0; i < 16 + c[0]!; i++) ds.update(salt);
  const sSeq = repeatTo(ds.digest(), salt.length);

  for (let i = 0; i < rounds; i++) {
    const h = hash();
    h.update(i & 1 ? pSeq : c);
    if (i % 3) h.update(sSeq);
    if (i % 7) h.update(pSeq);
    h.update(i & 1 ? c : pSeq);
    c = h.digest();
    // Let other connections be served during large round counts.
    if (i % 20000 === 19999) await yieldToEventLoop();
  }

  const encoded = algorithm === 'sha256'
    ? encodeGroups(c, SHA256_GROUPS) + to64((c[31]! << 8) | c[30]!, 3)
    : encodeGroups(c, SHA512_GROUPS) + to64(c[63]!, 2);
  return `${id}${customRounds ? `rounds=${rounds}$` : ''}${saltText}$${encoded}`;
}

// Exported for tests and for tools that want to report the parameters in use.
export const SCRYPT_PARAMETERS = Object.freeze({ ln: SCRYPT_LN, r: SCRYPT_R, p: SCRYPT_P, keylen: SCRYPT_KEYLEN, saltBytes: SCRYPT_SALT_BYTES });

/**
 * An scrypt hash of a password nobody has, with the current parameters.
 * Fixed, not made at start: making it would cost an scrypt in every short-lived
 * process (`yubin checkpassword`) and show in its timing.
 */
const NOBODYS_HASH = '$scrypt$ln=15,r=8,p=1$CvPHsaAk5GifOzpBmsvclg$K9ooJ776LnM2R8l53TXu0FNnWM8NxrwE/ddz5IncM0A';

/** A password check that cannot succeed: an unknown user (or a fast legacy hash) costs what a wrong scrypt password does. */
export async function wastePasswordCheck(password: string): Promise<void> {
  await verifyPassword(password, NOBODYS_HASH);
}
