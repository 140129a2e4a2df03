/**
 * The one action layer: every read and change webadmin offers, as a method,
 * a path under /api/v1, the role it needs and a function. The JSON API and
 * the HTML forms both call these (api.ts); pages read through them too, so a
 * page can show nothing the API would not answer to the same person.
 */
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { CommandError, controlRequest, ensureMaildir, queueEntries, why } from '../../core/index.js';
import { parseWhen } from '../autorespond/dates.js';
import { VacationError, vacationState } from '../autorespond/settings.js';
import { dkimRecord, generateKey } from '../mailauth/keys.js';
import { maildirOf, parseAddress, userDir, validDomain, validUserName } from '../vpopmail/names.js';
import { hashPassword, verifyPassword } from '../vpopmail/passwords.js';
import { formatQuota, isUnlimited, parseQuota, readUsage } from '../vpopmail/quota.js';
import { catchallText } from '../vpopmail/sqlite-store.js';
import { StoreConflict, type Catchall, type DomainRecord, type UserFlag, type UserRecord } from '../vpopmail/store.js';
import type { Role, Who } from './auth.js';
import type { WebadminContext } from './context.js';

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

const bad = (message: string): never => {
  throw new ActionError(400, message);
};

export type Fields = Readonly<Record<string, unknown>>;

export interface ActionCall {
  readonly ctx: WebadminContext;
  readonly who: Who;
  readonly params: Readonly<Record<string, string>>;
  readonly body: Fields;
  readonly query: Readonly<Record<string, string>>;
}

export interface ActionResult {
  /** The JSON answer. Never holds a password. */
  readonly data: unknown;
  /** One line for the flash message after a form. */
  readonly message: string;
  /** Shown as is under the flash message (the DNS record to publish). */
  readonly detail?: string;
  /** For the log line of a change; reads have none. */
  readonly change?: { readonly action: string; readonly target: string };
}

export interface Action {
  readonly method: 'GET' | 'POST';
  /** Fastify path under /api/v1. */
  readonly path: string;
  /** server: server admins; domain: admins of the :domain in the path (and server admins); user: anyone logged in, on their own account. */
  readonly role: Role;
  run(call: ActionCall): Promise<ActionResult>;
}

// ---- fields ----

function text(body: Fields, key: string): string | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  return bad(`${key}: expected text`);
}

function need(body: Fields, key: string): string {
  const v = text(body, key)?.trim();
  return v ? v : bad(`${key} is missing`);
}

/** on/off as JSON (true/false) or a form (on, off, yes, no, 1, 0); undefined when absent. */
function flag(body: Fields, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'boolean') return v;
  const s = String(v).toLowerCase();
  if (['on', 'yes', 'true', '1'].includes(s)) return true;
  if (['off', 'no', 'false', '0'].includes(s)) return false;
  return bad(`${key}: expected on or off, got ${s.slice(0, 40)}`);
}

function password(body: Fields, key = 'password'): string {
  const p = text(body, key);
  if (!p) bad(`${key} is missing`);
  if (/[\0\r\n]/.test(p!)) bad(`${key}: a password cannot contain NUL or line breaks`);
  if (p!.length > 1024) bad(`${key}: longer than 1024 characters`);
  return p!;
}

function quotaField(body: Fields, key: string): string | undefined {
  const q = text(body, key)?.trim();
  if (q === undefined || q === '') return undefined;
  const parsed = parseQuota(q);
  return parsed ? formatQuota(parsed) : bad(`${key}: invalid quota ${q.slice(0, 40)} (use NOQUOTA, 10000000S, 1000C, 10000000S,1000C or 10MB)`);
}

function addressField(value: string, key: string): string {
  const a = parseAddress(value.trim());
  return a ? `${a.name}@${a.domain}` : bad(`${key}: invalid address ${value.slice(0, 80)} (expected user@domain)`);
}

function domainParam(call: ActionCall): string {
  const d = (call.params.domain ?? '').toLowerCase();
  return validDomain(d) ? d : bad(`invalid domain name: ${d.slice(0, 80)}`);
}

async function needDomain(call: ActionCall): Promise<DomainRecord> {
  const d = domainParam(call);
  const rec = await call.ctx.store().getDomain(d);
  if (!rec) throw new ActionError(404, `no such domain: ${d}`);
  return rec;
}

async function needUser(call: ActionCall): Promise<UserRecord> {
  const d = await needDomain(call);
  const name = (call.params.user ?? '').toLowerCase();
  const u = validUserName(name) ? await call.ctx.store().getUser(d.name, name) : undefined;
  if (!u) throw new ActionError(404, `no such user: ${name.slice(0, 64)}@${d.name}`);
  return u;
}

async function me(call: ActionCall): Promise<{ user: UserRecord; domain: DomainRecord }> {
  const domain = await call.ctx.store().getDomain(call.who.domain);
  const user = domain && (await call.ctx.store().getUser(call.who.domain, call.who.name));
  if (!domain || !user) throw new ActionError(404, `${call.who.address} has no mailbox here`);
  return { user, domain };
}

// ---- views (what the JSON shows; no password, no hash) ----

const SERVICES: Record<string, UserFlag> = { pop: 'noPop', smtp: 'noSmtp', relay: 'noRelay', webmail: 'noWebmail', imap: 'noImap' };

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

function catchallFrom(body: Fields): Catchall {
  const kind = need(body, 'catchall');
  if (kind === 'bounce' || kind === 'bounce-no-mailbox') return { kind: 'bounce-no-mailbox' };
  if (kind === 'delete') return { kind: 'delete' };
  if (kind === 'forward') return { kind: 'forward', address: addressField(need(body, 'address'), 'address') };
  // An address alone means forward to it, as `yubin domain catchall` takes it.
  if (kind.includes('@')) return { kind: 'forward', address: addressField(kind, 'catchall') };
  return bad(`catchall: expected bounce, delete or forward, got ${kind.slice(0, 40)}`);
}

/** `user`'s own forwarding is the alias of the same name (vdelivermail reads it before the mailbox; its own address in it keeps a copy). */
async function forwardingOf(ctx: WebadminContext, u: UserRecord): Promise<{ addresses: string[]; keepCopy: boolean }> {
  const self = `${u.name}@${u.domain}`;
  const alias = await ctx.store().getAlias(u.domain, u.name);
  const targets = alias?.targets ?? [];
  return { addresses: targets.filter((t) => t.toLowerCase() !== self), keepCopy: targets.some((t) => t.toLowerCase() === self) };
}

async function setForwarding(ctx: WebadminContext, u: UserRecord, addresses: readonly string[], keepCopy: boolean): Promise<void> {
  const store = ctx.store();
  await store.removeAlias(u.domain, u.name);
  if (!addresses.length) return; // no forward: the mailbox, as before (keep-a-copy alone means nothing)
  for (const a of addresses) await store.addAliasTarget(u.domain, u.name, a);
  if (keepCopy) await store.addAliasTarget(u.domain, u.name, `${u.name}@${u.domain}`);
}

function vacationView(ctx: WebadminContext, address: string) {
  const v = ctx.vacations().get(address);
  const now = ctx.services.clock.now();
  const iso = (t: number | undefined) => (t === undefined ? null : new Date(t).toISOString());
  return v ? { enabled: v.enabled, state: vacationState(v, now), start: iso(v.start), end: iso(v.end), subject: v.subject ?? null, body: v.body } : null;
}

async function setPassword(ctx: WebadminContext, u: UserRecord, pw: string): Promise<void> {
  await ctx.store().updateUser(u.domain, u.name, { passwordHash: await hashPassword(pw), clearPassword: pw });
}

function when(body: Fields, key: 'start' | 'end', now: number): number | undefined {
  const t = text(body, key)?.trim();
  if (!t) return undefined;
  return parseWhen(t, key, now) ?? bad(`${key}: invalid time ${t.slice(0, 40)} (expected YYYY-MM-DD or YYYY-MM-DDTHH:MM)`);
}

function yyyymm(now: number): string {
  const d = new Date(now);
  return `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
}

/** The server's answer on its control socket, or 503 saying none runs. */
async function control(ctx: WebadminContext, req: Parameters<typeof controlRequest>[1]) {
  let res: Awaited<ReturnType<typeof controlRequest>>;
  try {
    res = await controlRequest(ctx.config.dataDir, req, 5_000);
  } catch (err) {
    throw new ActionError(503, `the server did not answer on its control socket: ${(err as Error).message}`);
  }
  if (!res) throw new ActionError(503, 'no server answers on the control socket (is yubin serve running on this dataDir?): nothing was changed');
  if (!res.ok) throw new ActionError(res.error.startsWith('no message') ? 404 : 400, res.error);
  return res;
}

const QUEUE_ID = /^[A-Za-z0-9._-]{1,100}$/;

function queueId(call: ActionCall): string {
  const id = call.params.id ?? '';
  return QUEUE_ID.test(id) ? id : bad(`invalid queue id: ${id.slice(0, 40)}`);
}

// ---- the actions ----

export const ACTIONS: readonly Action[] = [
  {
    method: 'GET',
    path: '/me',
    role: 'user',
    async run(call) {
      const { who, ctx } = call;
      const base = { address: who.address, role: who.role, domain: who.domain };
      const domain = await ctx.store().getDomain(who.domain);
      const user = domain && (await ctx.store().getUser(who.domain, who.name));
      // A server admin known only from the config (token use) has no mailbox.
      if (!user) return { data: { ...base, mailbox: null }, message: '' };
      return {
        data: { ...base, mailbox: { ...userView(user, await usageOf(ctx, user)), forwarding: await forwardingOf(ctx, user), vacation: vacationView(ctx, who.address) } },
        message: '',
      };
    },
  },
  {
    method: 'POST',
    path: '/me/password',
    role: 'user',
    async run(call) {
      const { user } = await me(call);
      if (user.flags.noPasswordChange && call.who.role === 'user') throw new ActionError(403, 'password changes are turned off for this account');
      const old = password(call.body, 'oldPassword');
      const pw = password(call.body, 'password');
      if (!(await verifyPassword(old, user.passwordHash))) bad('oldPassword: the old password is wrong');
      await setPassword(call.ctx, user, pw);
      return { data: { ok: true }, message: 'password changed', change: { action: 'password', target: call.who.address } };
    },
  },
  {
    method: 'POST',
    path: '/me/forward',
    role: 'user',
    async run(call) {
      const { user } = await me(call);
      const raw = text(call.body, 'addresses') ?? '';
      const self = `${user.name}@${user.domain}`;
      const addresses = [...new Set(raw.split(/[\s,;]+/).filter(Boolean).map((a) => addressField(a, 'addresses')))].filter((a) => a !== self);
      if (addresses.length > 20) bad('addresses: at most 20');
      const keepCopy = flag(call.body, 'keepCopy') ?? false;
      await setForwarding(call.ctx, user, addresses, keepCopy);
      const message = addresses.length ? `mail forwarded to ${addresses.join(', ')}${keepCopy ? ', a copy kept' : ''}` : 'forwarding off';
      return { data: { addresses, keepCopy: addresses.length ? keepCopy : false }, message, change: { action: 'forward', target: self } };
    },
  },
  {
    method: 'POST',
    path: '/me/vacation',
    role: 'user',
    async run(call) {
      const { user } = await me(call);
      const address = `${user.name}@${user.domain}`;
      const enabled = flag(call.body, 'enabled') ?? false;
      const store = call.ctx.vacations();
      const now = call.ctx.services.clock.now();
      if (!enabled) {
        const v = store.get(address);
        if (v?.enabled) store.set(address, { ...v, enabled: false });
      } else {
        const start = when(call.body, 'start', now);
        const end = when(call.body, 'end', now);
        if (end !== undefined && end <= now) bad('end: already past: no mail would be answered');
        try {
          store.set(address, { enabled: true, start, end, subject: text(call.body, 'subject'), body: text(call.body, 'body') ?? '' });
        } catch (err) {
          if (err instanceof VacationError) bad(err.message);
          throw err;
        }
      }
      const listed = call.ctx.config.delivery.plugins.some((p) => p.ref === 'autorespond');
      const warning = enabled && !listed ? 'autorespond is not in delivery.plugins: no replies are sent until the site lists it there' : undefined;
      return {
        data: { vacation: vacationView(call.ctx, address), ...(warning ? { warning } : {}) },
        message: `vacation reply ${enabled ? 'on' : 'off'}${warning ? ` (${warning})` : ''}`,
        change: { action: enabled ? 'vacation-on' : 'vacation-off', target: address },
      };
    },
  },
  {
    method: 'POST',
    path: '/me/spam',
    role: 'user',
    async run(call) {
      const { user } = await me(call);
      const spamFiling = spamField(call.body);
      await call.ctx.store().updateUser(user.domain, user.name, { spamFiling });
      return { data: { spamFiling: spamFiling ?? 'domain' }, message: `spam filing ${spamWords(spamFiling)}`, change: { action: 'spam', target: call.who.address } };
    },
  },

  // ---- server admin ----
  {
    method: 'GET',
    path: '/domains',
    role: 'server',
    async run(call) {
      const domains = await call.ctx.store().listDomains();
      const out = [];
      for (const d of domains) out.push({ ...domainView(d), users: await call.ctx.store().countUsers(d.name) });
      return { data: { domains: out }, message: '' };
    },
  },
  {
    method: 'POST',
    path: '/domains',
    role: 'server',
    async run(call) {
      const { ctx, body } = call;
      const d = need(body, 'domain').toLowerCase().replace(/\.$/, '');
      if (!validDomain(d)) bad(`domain: invalid domain name ${d.slice(0, 80)}`);
      const pw = password(body);
      const defaultQuota = quotaField(body, 'defaultQuota') ?? 'NOQUOTA';
      const store = ctx.store();
      if (await store.getDomain(d)) bad(`domain ${d} exists`);
      await mkdir(path.join(ctx.paths.root, d), { recursive: true, mode: 0o700 });
      await store.addDomain({ name: d, catchall: { kind: 'bounce-no-mailbox' }, defaultQuota, clearPasswords: flag(body, 'clearPasswords') ?? false, spamFiling: flag(body, 'spamFiling') ?? false });
      await store.addUser({ domain: d, name: 'postmaster', passwordHash: await hashPassword(pw), clearPassword: pw, realName: 'Postmaster' });
      await ensureMaildir(maildirOf(ctx.paths.root, { domain: d, name: 'postmaster' }));
      return { data: domainView((await store.getDomain(d))!), message: `added domain ${d} with postmaster@${d}`, change: { action: 'domain-add', target: d } };
    },
  },
  {
    method: 'POST',
    path: '/domains/:domain/delete',
    role: 'server',
    async run(call) {
      const d = await needDomain(call);
      if (d.name === call.who.domain) bad(`${d.name} is your own account's domain: another server admin must delete it`);
      await call.ctx.store().deleteDomain(d.name);
      await rm(path.join(call.ctx.paths.root, d.name), { recursive: true, force: true });
      return { data: { deleted: d.name }, message: `deleted domain ${d.name}`, change: { action: 'domain-delete', target: d.name } };
    },
  },
  {
    method: 'POST',
    path: '/domains/:domain/settings',
    role: 'server',
    async run(call) {
      const d = await needDomain(call);
      const changes = {
        ...(quotaField(call.body, 'defaultQuota') !== undefined ? { defaultQuota: quotaField(call.body, 'defaultQuota')! } : {}),
        ...(flag(call.body, 'clearPasswords') !== undefined ? { clearPasswords: flag(call.body, 'clearPasswords')! } : {}),
        ...(flag(call.body, 'spamFiling') !== undefined ? { spamFiling: flag(call.body, 'spamFiling')! } : {}),
      };
      if (!Object.keys(changes).length) bad('nothing to change: give defaultQuota, clearPasswords or spamFiling');
      const rec = await call.ctx.store().updateDomain(d.name, changes);
      return { data: domainView(rec!), message: `changed the settings of ${d.name}`, change: { action: 'domain-settings', target: d.name } };
    },
  },
  {
    method: 'POST',
    path: '/domains/:domain/dkim',
    role: 'server',
    async run(call) {
      const d = await needDomain(call);
      const selector = text(call.body, 'selector')?.trim() || yyyymm(call.ctx.services.clock.now());
      if (!/^[a-z0-9-]{1,63}$/i.test(selector)) bad(`selector: invalid selector ${selector.slice(0, 40)} (letters, digits and -)`);
      let key: { file: string; pem: string };
      try {
        key = await generateKey(call.ctx.dkimDir, d.name, selector);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') bad(`a DKIM key for ${d.name} with selector ${selector} exists: choose another selector`);
        throw err;
      }
      const record = dkimRecord(d.name, selector, key.pem);
      return {
        data: { domain: d.name, selector, file: key.file, record, sign: `plugins.mailauth.sign: { ${d.name}: { selector: ${selector} } }` },
        message: `DKIM key made for ${d.name}, selector ${selector}: publish ${record.name} TXT, then add ${d.name}: { selector: ${selector} } to plugins.mailauth.sign`,
        detail: `name:  ${record.name}\nTXT:   ${record.value}\n\nzone file line:\n${record.zoneLine}`,
        change: { action: 'dkim-keygen', target: `${selector}._domainkey.${d.name}` },
      };
    },
  },
  {
    method: 'GET',
    path: '/queue',
    role: 'server',
    async run(call) {
      const entries = await queueEntries(call.ctx.config, call.ctx.services.localDomains);
      return { data: { messages: entries }, message: '' };
    },
  },
  {
    method: 'POST',
    path: '/queue/flush',
    role: 'server',
    async run(call) {
      const res = await control(call.ctx, { cmd: 'flush' });
      return { data: { scheduled: res.messages ?? 0 }, message: `flush: ${res.messages ?? 0} messages scheduled for delivery now`, change: { action: 'queue-flush', target: 'queue' } };
    },
  },
  ...(['delete', 'bounce'] as const).map(
    (cmd): Action => ({
      method: 'POST',
      path: `/queue/:id/${cmd}`,
      role: 'server',
      async run(call) {
        const id = queueId(call);
        await control(call.ctx, { cmd, id });
        return {
          data: { id, [cmd === 'delete' ? 'deleted' : 'bounced']: true },
          message: cmd === 'delete' ? `message ${id} deleted` : `message ${id}: its pending recipients bounce to the sender`,
          change: { action: `queue-${cmd}`, target: id },
        };
      },
    }),
  ),
  {
    method: 'GET',
    path: '/why',
    role: 'server',
    async run(call) {
      const q = (call.query.q ?? '').trim();
      if (!q) bad('q is missing: an IP, an address, a domain, a queue id or a Message-ID');
      if (q.length > 300) bad('q: longer than 300 characters');
      const since = call.query.since?.trim() || undefined;
      try {
        const stories = JSON.parse(why(call.ctx.config, q, { since, json: true })) as unknown[];
        const textAnswer = why(call.ctx.config, q, { since });
        return { data: { query: q, stories, text: textAnswer }, message: '' };
      } catch (err) {
        if (err instanceof CommandError) throw new ActionError(err.message.includes('journal is off') || err.message.includes('no journal') ? 503 : 400, err.message);
        throw err;
      }
    },
  },

  // ---- domain admin ----
  {
    method: 'GET',
    path: '/domains/:domain',
    role: 'domain',
    async run(call) {
      const d = await needDomain(call);
      const store = call.ctx.store();
      const users = [];
      for (const u of await store.listUsers(d.name)) users.push(userView(u, await usageOf(call.ctx, u)));
      const aliases = (await store.listAliases(d.name)).map((a) => ({ alias: `${a.name}@${a.domain}`, name: a.name, targets: a.targets }));
      return { data: { ...domainView(d), users, aliases }, message: '' };
    },
  },
  {
    method: 'POST',
    path: '/domains/:domain/catchall',
    role: 'domain',
    async run(call) {
      const d = await needDomain(call);
      const catchall = catchallFrom(call.body);
      await call.ctx.store().updateDomain(d.name, { catchall });
      return { data: { domain: d.name, catchall: catchallText(catchall) }, message: `catch-all of ${d.name}: ${catchallText(catchall)}`, change: { action: 'catchall', target: d.name } };
    },
  },
  {
    method: 'POST',
    path: '/domains/:domain/users',
    role: 'domain',
    async run(call) {
      const d = await needDomain(call);
      const name = need(call.body, 'name').toLowerCase();
      if (!validUserName(name)) bad(`name: invalid user name ${name.slice(0, 64)} (letters, digits and . _ - +, a letter or digit first)`);
      const pw = password(call.body);
      const store = call.ctx.store();
      if (await store.getUser(d.name, name)) bad(`user ${name}@${d.name} exists`);
      if (await store.getAlias(d.name, name)) bad(`${name}@${d.name} is an alias: remove it first`);
      const user = await store.addUser({ domain: d.name, name, passwordHash: await hashPassword(pw), clearPassword: pw, quota: quotaField(call.body, 'quota') ?? d.defaultQuota, realName: text(call.body, 'realName')?.trim() ?? '' });
      await ensureMaildir(maildirOf(call.ctx.paths.root, user));
      return { data: userView(user, undefined), message: `added ${name}@${d.name}`, change: { action: 'user-add', target: `${name}@${d.name}` } };
    },
  },
  {
    method: 'GET',
    path: '/domains/:domain/users/:user',
    role: 'domain',
    async run(call) {
      const u = await needUser(call);
      return { data: { ...userView(u, await usageOf(call.ctx, u)), forwarding: await forwardingOf(call.ctx, u) }, message: '' };
    },
  },
  {
    method: 'POST',
    path: '/domains/:domain/users/:user/delete',
    role: 'domain',
    async run(call) {
      const u = await needUser(call);
      const address = `${u.name}@${u.domain}`;
      if (address === call.who.address) bad('you cannot delete the account you are logged in as');
      await call.ctx.store().deleteUser(u.domain, u.name);
      await rm(userDir(call.ctx.paths.root, u), { recursive: true, force: true });
      call.ctx.sessions.deleteAddress(address);
      return { data: { deleted: address }, message: `deleted ${address}`, change: { action: 'user-delete', target: address } };
    },
  },
  {
    method: 'POST',
    path: '/domains/:domain/users/:user/password',
    role: 'domain',
    async run(call) {
      const u = await needUser(call);
      await setPassword(call.ctx, u, password(call.body));
      return { data: { ok: true }, message: `password of ${u.name}@${u.domain} changed`, change: { action: 'user-password', target: `${u.name}@${u.domain}` } };
    },
  },
  {
    method: 'POST',
    path: '/domains/:domain/users/:user/quota',
    role: 'domain',
    async run(call) {
      const u = await needUser(call);
      const quota = quotaField(call.body, 'quota') ?? bad('quota is missing');
      await call.ctx.store().updateUser(u.domain, u.name, { quota });
      return { data: { quota }, message: `quota of ${u.name}@${u.domain}: ${quota}`, change: { action: 'user-quota', target: `${u.name}@${u.domain}` } };
    },
  },
  {
    method: 'POST',
    path: '/domains/:domain/users/:user/services',
    role: 'domain',
    async run(call) {
      const u = await needUser(call);
      const flags: Partial<Record<UserFlag, boolean>> = {};
      for (const [service, f] of Object.entries(SERVICES)) {
        const on = flag(call.body, service);
        if (on !== undefined) flags[f] = !on;
      }
      // Who administers a domain is a server admin's decision.
      const admin = flag(call.body, 'domainAdmin');
      if (admin !== undefined) {
        if (call.who.role !== 'server') throw new ActionError(403, 'only a server admin makes domain admins');
        flags.domainAdmin = admin;
      }
      if (!Object.keys(flags).length) bad(`nothing to change: give ${Object.keys(SERVICES).join(', ')} as on or off`);
      const rec = await call.ctx.store().updateUser(u.domain, u.name, { flags });
      const view = userView(rec!, undefined);
      return { data: { services: view.services, domainAdmin: view.domainAdmin }, message: `services of ${u.name}@${u.domain} changed`, change: { action: 'user-services', target: `${u.name}@${u.domain}` } };
    },
  },
  {
    method: 'POST',
    path: '/domains/:domain/users/:user/spam',
    role: 'domain',
    async run(call) {
      const u = await needUser(call);
      const spamFiling = spamField(call.body);
      await call.ctx.store().updateUser(u.domain, u.name, { spamFiling });
      return { data: { spamFiling: spamFiling ?? 'domain' }, message: `spam filing of ${u.name}@${u.domain} ${spamWords(spamFiling)}`, change: { action: 'user-spam', target: `${u.name}@${u.domain}` } };
    },
  },
  {
    method: 'POST',
    path: '/domains/:domain/aliases',
    role: 'domain',
    async run(call) {
      const d = await needDomain(call);
      const name = need(call.body, 'name').toLowerCase().replace(new RegExp(`@${d.name.replace(/\./g, '\\.')}$`), '');
      if (!validUserName(name)) bad(`name: invalid alias name ${name.slice(0, 64)}`);
      const target = addressField(need(call.body, 'target'), 'target');
      try {
        const a = await call.ctx.store().addAliasTarget(d.name, name, target);
        return { data: { alias: `${a.name}@${a.domain}`, targets: a.targets }, message: `${name}@${d.name} -> ${target}`, change: { action: 'alias-add', target: `${name}@${d.name}` } };
      } catch (err) {
        if (err instanceof StoreConflict) bad(err.message);
        throw err;
      }
    },
  },
  {
    method: 'POST',
    path: '/domains/:domain/aliases/:alias/remove',
    role: 'domain',
    async run(call) {
      const d = await needDomain(call);
      const name = (call.params.alias ?? '').toLowerCase();
      const t = text(call.body, 'target')?.trim();
      const target = t ? addressField(t, 'target') : undefined;
      if (!(await call.ctx.store().removeAlias(d.name, name, target))) throw new ActionError(404, `no such alias: ${name.slice(0, 64)}@${d.name}${target ? ` -> ${target}` : ''}`);
      return { data: { removed: `${name}@${d.name}`, target: target ?? null }, message: `removed ${name}@${d.name}${target ? ` -> ${target}` : ''}`, change: { action: 'alias-remove', target: `${name}@${d.name}` } };
    },
  },
];

/** on, off, or domain (follow the domain's setting: undefined in the store). */
function spamField(body: Fields): boolean | undefined {
  const v = text(body, 'spamFiling') ?? (typeof body.spamFiling === 'boolean' ? String(body.spamFiling) : undefined);
  if (v === undefined || v === '') return bad('spamFiling is missing: on, off or domain');
  if (v === 'domain') return undefined;
  return flag({ spamFiling: v }, 'spamFiling');
}

function spamWords(v: boolean | undefined): string {
  return v === undefined ? "follows the domain's setting" : v ? 'on' : 'off';
}

/** May WHO act on DOMAIN as its admin? */
export function adminsDomain(who: Who, domain: string): boolean {
  return who.role === 'server' || (who.role === 'domain' && who.domain === domain.toLowerCase());
}
