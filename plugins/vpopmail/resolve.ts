/**
 * Who an address of a virtual domain is, in vdelivermail's order: an alias
 * (valias / .qmail-NAME) first, then a user (also `user-ext` as `user`,
 * qmail's extension addresses), then the domain's catch-all.
 */
import type { AliasRecord, Catchall, DomainRecord, MailStore, UserRecord } from './store.js';

export type Resolution =
  | { readonly kind: 'alias'; readonly alias: AliasRecord; readonly user: UserRecord | undefined }
  | { readonly kind: 'user'; readonly user: UserRecord }
  | { readonly kind: 'catchall'; readonly catchall: Catchall };

export async function resolveAddress(store: MailStore, domain: DomainRecord, local: string): Promise<Resolution> {
  const name = local.toLowerCase();
  const alias = await store.getAlias(domain.name, name);
  if (alias) return { kind: 'alias', alias, user: await store.getUser(domain.name, name) };
  const user = await store.getUser(domain.name, name);
  if (user) return { kind: 'user', user };
  const dash = name.indexOf('-');
  if (dash > 0) {
    const base = await store.getUser(domain.name, name.slice(0, dash));
    if (base) return { kind: 'user', user: base };
  }
  return { kind: 'catchall', catchall: domain.catchall };
}
