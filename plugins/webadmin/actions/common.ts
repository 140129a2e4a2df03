/**
 * What the actions share: the error with a status, the field readers for
 * JSON bodies and forms, the lookups of the domain, user or account an
 * action is about, and the views (what the JSON shows: no password, no hash).
 * Kept out of index.ts so the action files can import it without an import
 * cycle through the combined list.
 */
import { maildirOf, parseAddress, validDomain, validUserName } from '../../vpopmail/names.js';
import { hashPassword } from '../../vpopmail/passwords.js';
import { formatQuota, isUnlimited, parseQuota, readUsage } from '../../vpopmail/quota.js';
import { catchallText } from '../../vpopmail/sqlite-store.js';
import type { DomainRecord, UserFlag, UserRecord } from '../../vpopmail/store.js';
import type { WebadminContext } from '../context.js';
import type { ActionCall, Fields } from './index.js';

/** A problem with a status: 400 bad input, 403 not yours, 404 unknown, 503 no server to ask. */
export class ActionError extends Error {
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 503,
    message: string,
  ) {
    super(message);
    this.name = 'ActionError';
  }
}

export const bad = (message: string): never => {
  throw new ActionError(400, message);
};

// ---- fields ----

export function text(body: Fields, key: string): string | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  return bad(`${key}: expected text`);
}

export function need(body: Fields, key: string): string {
  const v = text(body, key)?.trim();
  return v ? v : bad(`${key} is missing`);
}

/** on/off as JSON (true/false) or a form (on, off, yes, no, 1, 0); undefined when absent. */
export function flag(body: Fields, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'boolean') return v;
  const s = String(v).toLowerCase();
  if (['on', 'yes', 'true', '1'].includes(s)) return true;
  if (['off', 'no', 'false', '0'].includes(s)) return false;
  return bad(`${key}: expected on or off, got ${s.slice(0, 40)}`);
}

export function password(body: Fields, key = 'password'): string {
  const p = text(body, key);
  if (!p) bad(`${key} is missing`);
  if (/[\0\r\n]/.test(p!)) bad(`${key}: a password cannot contain NUL or line breaks`);
  if (p!.length > 1024) bad(`${key}: longer than 1024 characters`);
  return p!;
}

export function quotaField(body: Fields, key: string): string | undefined {
  const q = text(body, key)?.trim();
  if (q === undefined || q === '') return undefined;
  const parsed = parseQuota(q);
  return parsed ? formatQuota(parsed) : bad(`${key}: invalid quota ${q.slice(0, 40)} (use NOQUOTA, 10000000S, 1000C, 10000000S,1000C or 10MB)`);
}

export function addressField(value: string, key: string): string {
  const a = parseAddress(value.trim());
  return a ? `${a.name}@${a.domain}` : bad(`${key}: invalid address ${value.slice(0, 80)} (expected user@domain)`);
}

export function domainParam(call: ActionCall): string {
  const d = (call.params.domain ?? '').toLowerCase();
  return validDomain(d) ? d : bad(`invalid domain name: ${d.slice(0, 80)}`);
}

export async function needDomain(call: ActionCall): Promise<DomainRecord> {
  const d = domainParam(call);
  const rec = await call.ctx.store().getDomain(d);
  if (!rec) throw new ActionError(404, `no such domain: ${d}`);
  return rec;
}

export async function needUser(call: ActionCall): Promise<UserRecord> {
  const d = await needDomain(call);
  const name = (call.params.user ?? '').toLowerCase();
  const u = validUserName(name) ? await call.ctx.store().getUser(d.name, name) : undefined;
  if (!u) throw new ActionError(404, `no such user: ${name.slice(0, 64)}@${d.name}`);
  return u;
}

export async function me(call: ActionCall): Promise<{ user: UserRecord; domain: DomainRecord }> {
  const domain = await call.ctx.store().getDomain(call.who.domain);
  const user = domain && (await call.ctx.store().getUser(call.who.domain, call.who.name));
  if (!domain || !user) throw new ActionError(404, `${call.who.address} has no mailbox here`);
  return { user, domain };
}

// ---- views (what the JSON shows; no password, no hash) ----

export const SERVICES: Record<string, UserFlag> = { pop: 'noPop', smtp: 'noSmtp', relay: 'noRelay', webmail: 'noWebmail', imap: 'noImap' };

export interface UsageView {
  readonly bytes: number;
  readonly count: number;
  readonly percent: number;
}

export async function usageOf(ctx: WebadminContext, u: UserRecord): Promise<UsageView> {
  const quota = parseQuota(u.quota) ?? {};
  const used = await readUsage(maildirOf(ctx.paths.root, u), quota).catch(() => ({ bytes: 0, count: 0 }));
  const percent = isUnlimited(quota) ? 0 : Math.max(quota.bytes ? (100 * used.bytes) / quota.bytes : 0, quota.count ? (100 * used.count) / quota.count : 0);
  return { bytes: used.bytes, count: used.count, percent: Math.round(percent) };
}

export function domainView(d: DomainRecord) {
  return {
    domain: d.name,
    catchall: catchallText(d.catchall),
    defaultQuota: d.defaultQuota,
    clearPasswords: d.clearPasswords,
    spamFiling: d.spamFiling,
    created: new Date(d.created).toISOString(),
  };
}

export function userView(u: UserRecord, usage: UsageView | undefined) {
  return {
    address: `${u.name}@${u.domain}`,
    name: u.name,
    realName: u.realName,
    quota: u.quota,
    usage,
    services: Object.fromEntries(Object.entries(SERVICES).map(([s, f]) => [s, !u.flags[f]])) as Record<string, boolean>,
    domainAdmin: u.name === 'postmaster' || u.flags.domainAdmin,
    spamFiling: u.spamFiling ?? ('domain' as const),
    lastAuth: u.lastAuth && { ...u.lastAuth, time: new Date(u.lastAuth.time).toISOString() },
  };
}

/** `user`'s own forwarding is the alias of the same name (vdelivermail reads it before the mailbox; its own address in it keeps a copy). */
export async function forwardingOf(ctx: WebadminContext, u: UserRecord): Promise<{ addresses: string[]; keepCopy: boolean }> {
  const self = `${u.name}@${u.domain}`;
  const alias = await ctx.store().getAlias(u.domain, u.name);
  const targets = alias?.targets ?? [];
  return { addresses: targets.filter((t) => t.toLowerCase() !== self), keepCopy: targets.some((t) => t.toLowerCase() === self) };
}
export async function setPassword(ctx: WebadminContext, u: UserRecord, pw: string): Promise<void> {
  await ctx.store().updateUser(u.domain, u.name, { passwordHash: await hashPassword(pw), clearPassword: pw });
}

/** on, off, or domain (follow the domain's setting: undefined in the store). */
export function spamField(body: Fields): boolean | undefined {
  const v = text(body, 'spamFiling') ?? (typeof body.spamFiling === 'boolean' ? String(body.spamFiling) : undefined);
  if (v === undefined || v === '') return bad('spamFiling is missing: on, off or domain');
  if (v === 'domain') return undefined;
  return flag({ spamFiling: v }, 'spamFiling');
}

export function spamWords(v: boolean | undefined): string {
  return v === undefined ? "follows the domain's setting" : v ? 'on' : 'off';
}

