/**
 * Rows of the vpopmail tables as the SQLite and PostgreSQL stores read them,
 * turned into records. The drivers differ in types only: SQLite gives 0/1
 * and numbers, pg gives booleans and BIGINTs as strings (no precision lost
 * on its side).
 */
import { catchallFrom, flagsFromBits, type DomainRecord, type UserRecord } from './store.js';

type Bool = boolean | number;
type Int = number | string;

export interface DomainRow {
  name: string;
  catchall: string;
  clear_passwords: Bool;
  spam_filing: Bool;
  default_quota: string;
  created: Int;
}

export interface UserRow {
  domain: string;
  name: string;
  password: string;
  clear_password: string | null;
  quota: string;
  flags: number;
  real_name: string;
  dir: string | null;
  spam_filing: Bool | null;
  created: Int;
  last_auth: Int | null;
  last_auth_ip: string | null;
  last_auth_service: string | null;
}

export function domainFrom(row: DomainRow): DomainRecord {
  return {
    name: row.name,
    catchall: catchallFrom(row.catchall),
    clearPasswords: Boolean(row.clear_passwords),
    spamFiling: Boolean(row.spam_filing),
    defaultQuota: row.default_quota,
    created: Number(row.created),
  };
}

export function userFrom(row: UserRow): UserRecord {
  return {
    domain: row.domain,
    name: row.name,
    passwordHash: row.password,
    clearPassword: row.clear_password ?? undefined,
    quota: row.quota,
    flags: flagsFromBits(row.flags),
    realName: row.real_name,
    dir: row.dir ?? undefined,
    spamFiling: row.spam_filing === null ? undefined : Boolean(row.spam_filing),
    created: Number(row.created),
    lastAuth: row.last_auth === null ? undefined : { time: Number(row.last_auth), ip: row.last_auth_ip ?? '', service: row.last_auth_service ?? '' },
  };
}
