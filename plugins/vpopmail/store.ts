/**
 * What the vpopmail plugin keeps: virtual domains, their users and aliases.
 * The plugin and the CLI only talk to this interface, so a PostgreSQL store
 * can follow the SQLite one without touching either.
 *
 * Methods may answer at once (SQLite is synchronous) or with a promise (a
 * network database); callers always `await`.
 */

export type Awaitable<T> = T | Promise<T>;

/** What happens to mail for an address of the domain that nobody has (vpopmail's .qmail-default). */
export type Catchall = { readonly kind: 'bounce-no-mailbox' } | { readonly kind: 'delete' } | { readonly kind: 'forward'; readonly address: string };

export interface DomainRecord {
  readonly name: string;
  readonly catchall: Catchall;
  /** Keep users' clear passwords (vpopmail's CLEAR_PASSWD): needed for CRAM-MD5 and APOP. */
  readonly clearPasswords: boolean;
  /** File mail flagged `X-Spam-Flag: YES` into the spam folder (users may override). */
  readonly spamFiling: boolean;
  /** Quota given to new users (Maildir++ string or NOQUOTA). */
  readonly defaultQuota: string;
  readonly created: number;
}

/** vpopmail's gid flags, by name. The bit values are vpopmail's, so vpasswd files import as they are. */
export const USER_FLAG_BITS = {
  noPasswordChange: 0x01,
  noPop: 0x02,
  noWebmail: 0x04,
  noImap: 0x08,
  bounceMail: 0x10,
  noRelay: 0x20,
  noSmtp: 0x800,
  /** vpopmail's QA_ADMIN: qmailadmin lets this user administer their domain (webadmin does too). */
  domainAdmin: 0x1000,
} as const;

export type UserFlag = keyof typeof USER_FLAG_BITS;
export type UserFlags = Readonly<Record<UserFlag, boolean>>;

export function flagsFromBits(bits: number): UserFlags {
  return Object.fromEntries(Object.entries(USER_FLAG_BITS).map(([k, bit]) => [k, (bits & bit) !== 0])) as Record<UserFlag, boolean>;
}

export function flagsToBits(flags: Partial<UserFlags>): number {
  let bits = 0;
  for (const [k, bit] of Object.entries(USER_FLAG_BITS)) if (flags[k as UserFlag]) bits |= bit;
  return bits;
}

export interface UserRecord {
  readonly domain: string;
  /** Local part, lower case. */
  readonly name: string;
  /** Password hash: `$scrypt$` for new ones, imported `$1$` / `$5$` / `$6$` or clear text. */
  readonly passwordHash: string;
  /** Only where the domain keeps clear passwords. */
  readonly clearPassword: string | undefined;
  /** Maildir++ quota string or NOQUOTA. */
  readonly quota: string;
  readonly flags: UserFlags;
  readonly realName: string;
  /**
   * The user's directory (vpopmail's pw_dir) where it is not ROOT/DOMAIN/NAME:
   * a mailbox imported in place, or one vpopmail's dir_control hashed.
   */
  readonly dir: string | undefined;
  /** Spam filing for this user; undefined follows the domain. */
  readonly spamFiling: boolean | undefined;
  readonly created: number;
  readonly lastAuth: { readonly time: number; readonly ip: string; readonly service: string } | undefined;
}

export interface AliasRecord {
  readonly domain: string;
  readonly name: string;
  /** Addresses mail is forwarded to, in the order added. */
  readonly targets: readonly string[];
}

export type NewDomain = Pick<DomainRecord, 'name'> & Partial<Omit<DomainRecord, 'name' | 'created'>>;
export type DomainChanges = Partial<Omit<DomainRecord, 'name' | 'created'>>;
export type NewUser = Pick<UserRecord, 'domain' | 'name' | 'passwordHash'> &
  Partial<Omit<UserRecord, 'domain' | 'name' | 'passwordHash' | 'created' | 'lastAuth' | 'flags'>> & { readonly flags?: Partial<UserFlags> };
export type UserChanges = Partial<Omit<UserRecord, 'domain' | 'name' | 'created' | 'lastAuth' | 'flags'>> & { readonly flags?: Partial<UserFlags> };

/** A record already exists, or one it needs does not: the CLI reports it as a usage error. */
export class StoreConflict extends Error {
  override readonly name = 'StoreConflict';
}

/**
 * The store cannot answer now (a database server down or unreachable, or of a
 * newer schema): the server answers a temporary failure, never "no such user".
 * The message names the store and the cause, for the one log line.
 */
export class StoreUnavailable extends Error {
  override readonly name = 'StoreUnavailable';
}

/** One domain with everything in it, as `yubin store migrate` copies it. */
export interface DomainDump {
  readonly domain: DomainRecord;
  readonly users: readonly UserRecord[];
  readonly aliases: readonly AliasRecord[];
}

export function catchallFrom(text: string): Catchall {
  if (text === 'delete') return { kind: 'delete' };
  if (text === 'bounce-no-mailbox') return { kind: 'bounce-no-mailbox' };
  return { kind: 'forward', address: text };
}

/** How both stores keep a catch-all in one column: the kind, or the forwarding address. */
export function catchallText(c: Catchall): string {
  return c.kind === 'forward' ? c.address : c.kind;
}

export interface MailStore {
  /**
   * A number that changes whenever the data changed, in this process or
   * another (the CLI writes while the server runs). Read synchronously and
   * often: it must be cheap.
   */
  changeCounter(): number;

  /**
   * Calls `listener` when the data changed (in this process or another), for
   * stores whose reads are not synchronous: a cache re-reads at once rather
   * than at the next lookup, which would still see the old answer. Absent
   * where a read is synchronous (SQLite). Returns the unsubscribe function.
   */
  onChange?(listener: () => void): () => void;

  getDomain(name: string): Awaitable<DomainRecord | undefined>;
  listDomains(): Awaitable<DomainRecord[]>;
  domainNames(): Awaitable<string[]>;
  /** Throws StoreConflict when it exists. */
  addDomain(domain: NewDomain): Awaitable<DomainRecord>;
  updateDomain(name: string, changes: DomainChanges): Awaitable<DomainRecord | undefined>;
  /** Removes the domain with its users and aliases; false when there was none. */
  deleteDomain(name: string): Awaitable<boolean>;

  getUser(domain: string, name: string): Awaitable<UserRecord | undefined>;
  listUsers(domain: string): Awaitable<UserRecord[]>;
  countUsers(domain: string): Awaitable<number>;
  /** Throws StoreConflict when the user exists or the domain does not. */
  addUser(user: NewUser): Awaitable<UserRecord>;
  updateUser(domain: string, name: string, changes: UserChanges): Awaitable<UserRecord | undefined>;
  deleteUser(domain: string, name: string): Awaitable<boolean>;
  recordLogin(domain: string, name: string, time: number, ip: string, service: string): Awaitable<void>;

  getAlias(domain: string, name: string): Awaitable<AliasRecord | undefined>;
  listAliases(domain?: string): Awaitable<AliasRecord[]>;
  /** Aliases of this domain that forward to this address (MAIL FROM checks on submission). */
  aliasesTargeting(domain: string, address: string): Awaitable<AliasRecord[]>;
  /** Throws StoreConflict when the domain does not exist. */
  addAliasTarget(domain: string, name: string, target: string): Awaitable<AliasRecord>;
  /** Removes one target, or the whole alias without one; false when nothing matched. */
  removeAlias(domain: string, name: string, target?: string): Awaitable<boolean>;

  /**
   * Writes whole domains exactly as given (created, last login, hashes, clear
   * passwords, alias order), all or nothing: `yubin store migrate`. Throws
   * StoreConflict when one exists, unless `replace`, which deletes it first
   * with its users and aliases.
   */
  importDomains(dumps: readonly DomainDump[], options: { readonly replace: boolean }): Awaitable<void>;

  close(): Awaitable<void>;
}
