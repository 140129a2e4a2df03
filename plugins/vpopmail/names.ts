/**
 * Names in the mail store and where their mailboxes live. vpopmail's layout:
 * `ROOT/DOMAIN/USER/Maildir`, names lower-cased, nothing that could climb
 * out of the root or hide as a dot file.
 */
import path from 'node:path';

const DOMAIN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
/** Letters, digits and . _ - + ; a letter or digit first; at most 64 (RFC 5321's local-part limit). */
const USER = /^[a-z0-9][a-z0-9._+-]{0,63}$/;

export function validDomain(name: string): boolean {
  return name.length <= 253 && DOMAIN.test(name);
}

export function validUserName(name: string): boolean {
  return USER.test(name) && !name.includes('..');
}

export interface MailAddress {
  readonly name: string;
  readonly domain: string;
}

/** `user@domain` for the CLI; undefined unless both halves are valid. */
export function parseAddress(text: string): MailAddress | undefined {
  const at = text.lastIndexOf('@');
  if (at <= 0) return undefined;
  const name = text.slice(0, at).toLowerCase();
  const domain = text.slice(at + 1).toLowerCase().replace(/\.$/, '');
  return validUserName(name) && validDomain(domain) ? { name, domain } : undefined;
}

/** A login as vchkpw takes it: `user@domain`, `user%domain`, or a bare user in the default domain. */
export function parseLogin(login: string, defaultDomain: string | undefined): MailAddress | undefined {
  const sep = Math.max(login.lastIndexOf('@'), login.lastIndexOf('%'));
  if (sep < 0) return defaultDomain ? parseAddress(`${login}@${defaultDomain}`) : undefined;
  return parseAddress(`${login.slice(0, sep)}@${login.slice(sep + 1)}`);
}

/** Whose mailbox: a user record, or just the address for one not stored yet. */
export interface MailboxOwner {
  readonly domain: string;
  readonly name: string;
  /** vpopmail's pw_dir where it is not ROOT/DOMAIN/NAME (a box imported in place, dir_control hashing). */
  readonly dir?: string | undefined;
}

export function userDir(root: string, owner: MailboxOwner): string {
  return owner.dir ?? path.join(root, owner.domain, owner.name);
}

export function maildirOf(root: string, owner: MailboxOwner): string {
  return path.join(userDir(root, owner), 'Maildir');
}
