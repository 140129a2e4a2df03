/**
 * The user's own account: who am I, password, forwarding, vacation reply and
 * spam filing. Every logged-in person may run these, on their own mailbox.
 */
import { parseWhen } from '../../autorespond/dates.js';
import { VacationError, vacationState } from '../../autorespond/settings.js';
import { verifyPassword } from '../../vpopmail/passwords.js';
import type { UserRecord } from '../../vpopmail/store.js';
import type { WebadminContext } from '../context.js';
import { ActionError, addressField, bad, flag, forwardingOf, me, password, setPassword, spamField, spamWords, text, usageOf, userView } from './common.js';
import type { Action, Fields } from './index.js';

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

function when(body: Fields, key: 'start' | 'end', now: number): number | undefined {
  const t = text(body, key)?.trim();
  if (!t) return undefined;
  return parseWhen(t, key, now) ?? bad(`${key}: invalid time ${t.slice(0, 40)} (expected YYYY-MM-DD or YYYY-MM-DDTHH:MM)`);
}

export const USER_ACTIONS: readonly Action[] = [
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
];
