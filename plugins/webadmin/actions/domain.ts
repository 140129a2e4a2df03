/**
 * The domain admin's actions (postmaster@ or vpopmail's QA_ADMIN flag, and
 * server admins): the domain's users, aliases and catch-all.
 */
import { rm } from 'node:fs/promises';
import { ensureMaildir } from '../../../core/index.js';
import { maildirOf, userDir, validUserName } from '../../vpopmail/names.js';
import { hashPassword } from '../../vpopmail/passwords.js';
import { catchallText } from '../../vpopmail/sqlite-store.js';
import { StoreConflict, type Catchall, type UserFlag } from '../../vpopmail/store.js';
import { ActionError, addressField, bad, domainView, flag, forwardingOf, need, needDomain, needUser, password, quotaField, SERVICES, setPassword, spamField, spamWords, text, usageOf, userView } from './common.js';
import type { Action, Fields } from './index.js';

function catchallFrom(body: Fields): Catchall {
  const kind = need(body, 'catchall');
  if (kind === 'bounce' || kind === 'bounce-no-mailbox') return { kind: 'bounce-no-mailbox' };
  if (kind === 'delete') return { kind: 'delete' };
  if (kind === 'forward') return { kind: 'forward', address: addressField(need(body, 'address'), 'address') };
  // An address alone means forward to it, as `yubin domain catchall` takes it.
  if (kind.includes('@')) return { kind: 'forward', address: addressField(kind, 'catchall') };
  return bad(`catchall: expected bounce, delete or forward, got ${kind.slice(0, 40)}`);
}

export const DOMAIN_ACTIONS: readonly Action[] = [
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
