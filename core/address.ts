/** Envelope address helpers shared by the core's relay guard and the plugins. */
import type { Address } from './hooks.js';

/** Splits at the last '@' (the domain never contains one); the domain is lower-cased. */
export function splitAddress(address: string): Address {
  const at = address.lastIndexOf('@');
  if (at < 0) return { address, local: address, domain: '' };
  return { address, local: address.slice(0, at), domain: address.slice(at + 1).toLowerCase() };
}

/**
 * The local part asks for onward routing: the percent hack (`user%other@us`),
 * bang paths (`other!user@us`) or an '@' inside a quoted local part. A host
 * that honoured them would relay, so they are only allowed to clients that
 * may relay anyway (Postfix's allow_untrusted_routing = no).
 */
export function hasSenderRouting(local: string): boolean {
  return /[%!@]/.test(local);
}

/** True if `domain` equals an entry, or ends with an entry that starts with a dot (`.example.com`). */
export function domainMatches(domain: string, entries: ReadonlySet<string>): boolean {
  if (entries.has(domain)) return true;
  for (let i = domain.indexOf('.'); i >= 0; i = domain.indexOf('.', i + 1)) {
    if (entries.has(domain.slice(i))) return true;
  }
  return false;
}
