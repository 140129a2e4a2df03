/**
 * The server admin's actions: domains, DKIM keys, the queue (through the
 * running server's control socket) and the decision journal (why, the last
 * refusals as `yubin status` shows them).
 */
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { CommandError, controlRequest, ensureMaildir, queueEntries, refusals, why } from '../../../core/index.js';
import { dkimRecord, generateKey } from '../../mailauth/keys.js';
import { maildirOf, validDomain } from '../../vpopmail/names.js';
import { hashPassword } from '../../vpopmail/passwords.js';
import type { WebadminContext } from '../context.js';
import { ActionError, bad, domainView, flag, need, needDomain, password, quotaField, text } from './common.js';
import type { Action, ActionCall } from './index.js';

function yyyymm(now: number): string {
  const d = new Date(now);
  return `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
}

/** How many refusals GET /refusals answers with. */
const REFUSALS = 20;

const QUEUE_ID = /^[A-Za-z0-9._-]{1,100}$/;

function queueId(call: ActionCall): string {
  const id = call.params.id ?? '';
  return QUEUE_ID.test(id) ? id : bad(`invalid queue id: ${id.slice(0, 40)}`);
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


export const SERVER_ACTIONS: readonly Action[] = [
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
  {
    method: 'GET',
    path: '/refusals',
    role: 'server',
    async run(call) {
      // The journal file, read directly as `yubin status` does: no running server needed.
      const journal = call.ctx.config.journal.enabled;
      const last = refusals(call.ctx.config, REFUSALS).map((r) => ({ ...r, time: new Date(r.time).toISOString() }));
      return { data: { journal, refusals: last }, message: '' };
    },
  },
];
