/**
 * The HTML pages: plain server-rendered forms, no script. Every form posts to
 * the same /api/v1 endpoint a JSON client uses, with the session's CSRF token
 * and the page to come back to. Every value goes through html``'s escaping.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { formatWhen } from '../autorespond/dates.js';
import { ACTIONS, ActionError, type domainView, type userView } from './actions/index.js';
import { allowed, API, cookieOptions, sendError } from './api.js';
import { whoIs, type Who } from './auth.js';
import type { WebadminContext } from './context.js';
import { CSS, html, type Html, type HtmlValue } from './html.js';
import { COOKIE, type Session } from './sessions.js';

const ROLE_WORDS = { server: 'server admin', domain: 'domain admin', user: 'user' } as const;

function layout(title: string, who: Who | undefined, body: HtmlValue): Html {
  const flash = who?.session?.flash;
  if (who?.session) who.session.flash = undefined; // shown once
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} - yubin</title><link rel="stylesheet" href="/webadmin.css"></head>
<body><header><strong>yubin</strong>${
    who
      ? html` <span>${who.address} (${ROLE_WORDS[who.role]})</span> <a href="/">home</a>${who.role !== 'user' ? html` <a href="/me">my mailbox</a>` : ''}${
          who.session ? html`<form method="post" action="/logout"><input type="hidden" name="_csrf" value="${who.session.csrf}"><button>log out</button></form>` : ''
        }`
      : ''
  }</header>
<main>${flash ? html`<p class="flash-${flash.kind}" role="status">${flash.text}</p>${flash.detail ? html`<pre>${flash.detail}</pre>` : ''}` : ''}<h1>${title}</h1>
${body}</main></body></html>`;
}

export function errorPage(status: number, message: string, who: Who | undefined): Html {
  return layout(status === 403 ? 'Not allowed' : status === 404 ? 'Not found' : 'Error', who, html`<p>${message}</p><p><a href="/">back</a></p>`);
}

export function loginPage(session: Session, address: string, error: string | undefined): Html {
  return layout(
    'Log in',
    undefined,
    html`${error ? html`<p class="flash-error" role="alert">${error}</p>` : ''}
<form method="post" action="/login"><input type="hidden" name="_csrf" value="${session.csrf}">
<p><label>Address <input name="address" type="email" autocomplete="username" required value="${address}"></label></p>
<p><label>Password <input name="password" type="password" autocomplete="current-password" required></label></p>
<p><button>Log in</button></p></form>`,
  );
}

/** A form posting to an /api/v1 action, with the CSRF token and the page to come back to. */
function form(who: Who, back: string, path: string, fields: HtmlValue, button: string, inline = false): Html {
  return html`<form method="post" action="${API}${path}"${inline ? html` class="inline"` : ''}><input type="hidden" name="_csrf" value="${who.session?.csrf ?? ''}"><input type="hidden" name="_back" value="${back}">${fields} <button>${button}</button></form>`;
}

const onOff = (name: string, label: string, value: boolean | undefined) =>
  html`<label>${label} <select name="${name}"><option value="on"${value === true ? html` selected` : ''}>on</option><option value="off"${value === false ? html` selected` : ''}>off</option></select></label>`;

const spamSelect = (value: boolean | 'domain') =>
  html`<label>spam filing <select name="spamFiling">${(['domain', 'on', 'off'] as const).map(
    (v) => html`<option value="${v}"${String(value === true ? 'on' : value === false ? 'off' : 'domain') === v ? html` selected` : ''}>${v === 'domain' ? "domain's setting" : v}</option>`,
  )}</select></label>`;

const bytes = (n: number) => (n >= 1024 ** 2 ? `${(n / 1024 ** 2).toFixed(1)} MB` : n >= 1024 ? `${(n / 1024).toFixed(1)} kB` : `${n} bytes`);

type DomainData = ReturnType<typeof domainView> & { users: Array<ReturnType<typeof userView>>; aliases: Array<{ alias: string; name: string; targets: readonly string[] }> };

function adminPage(who: Who, domains: Array<ReturnType<typeof domainView> & { users: number }>, queue: QueueView, refused: RefusalsView, whyResult: { query: string; text?: string; error?: string } | undefined): Html {
  const back = '/admin';
  return layout(
    'Server administration',
    who,
    html`<h2>Domains</h2>
<table><tr><th>domain</th><th>users</th><th>catch-all</th><th>default quota</th><th></th></tr>
${domains.map(
  (d) => html`<tr><td><a href="/domains/${encodeURIComponent(d.domain)}">${d.domain}</a></td><td>${d.users}</td><td>${d.catchall}</td><td>${d.defaultQuota}</td><td>${form(who, back, `/domains/${encodeURIComponent(d.domain)}/delete`, '', 'delete domain and all its mail', true)}</td></tr>`,
)}</table>
<h3>Add a domain</h3>
${form(
  who,
  back,
  '/domains',
  html`<label>domain <input name="domain" required></label> <label>postmaster password <input name="password" type="password" autocomplete="new-password" required></label> <label>default quota <input name="defaultQuota" placeholder="NOQUOTA"></label>`,
  'add domain',
)}
<h2>Queue</h2>
${
  queue.error
    ? html`<p class="flash-error">${queue.error}</p>`
    : html`<p>${queue.messages.length} message(s) in the queue.</p>
<table><tr><th>id</th><th>received</th><th>sender</th><th>recipients</th><th></th></tr>
${queue.messages.map(
  (m) => html`<tr><td>${m.id}</td><td>${m.received}</td><td>${m.sender || '<>'}</td><td>${m.recipients.map((r) => html`${r.address} (${r.status}${r.lastError ? `: ${r.lastError}` : ''})<br>`)}</td>
<td>${form(who, back, `/queue/${encodeURIComponent(m.id)}/delete`, '', 'delete', true)} ${form(who, back, `/queue/${encodeURIComponent(m.id)}/bounce`, '', 'bounce', true)}</td></tr>`,
)}</table>`
}
${form(who, back, '/queue/flush', '', 'flush the queue (try everything now)')}
<p class="muted">Flush, delete and bounce go to the running server through its control socket.</p>
<h2>Recent refusals</h2>
${
  refused.error
    ? html`<p class="flash-error">${refused.error}</p>`
    : !refused.journal
      ? html`<p>The journal is off (journal.enabled: false): no refusals to show.</p>`
      : !refused.refusals.length
        ? html`<p>None yet.</p>`
        : html`<table class="refusals"><tr><th>time</th><th>client IP</th><th>listener</th><th>what happened</th></tr>
${refused.refusals.map((r) => html`<tr><td>${r.time.replace(/\.\d+Z$/, 'Z')}</td><td>${r.ip}</td><td>${r.listener}</td><td>${r.sentence}</td></tr>`)}</table>`
}
<h2>Why</h2>
<form method="get" action="/admin"><label>address, IP, domain, queue id or Message-ID <input name="why" required value="${whyResult?.query ?? ''}"></label> <button>ask the journal</button></form>
${whyResult ? (whyResult.error ? html`<p class="flash-error">${whyResult.error}</p>` : html`<pre>${whyResult.text}</pre>`) : ''}`,
  );
}

interface RefusalsView {
  readonly journal: boolean;
  readonly refusals: ReadonlyArray<{ time: string; ip: string; listener: string; sentence: string }>;
  readonly error?: string;
}

interface QueueView {
  readonly messages: Array<{ id: string; received: string; sender: string; recipients: Array<{ address: string; status: string; lastError: string | undefined }> }>;
  readonly error?: string;
}

function domainPage(who: Who, d: DomainData, dkim: boolean): Html {
  const enc = encodeURIComponent(d.domain);
  const back = `/domains/${enc}`;
  const base = `/domains/${enc}`;
  return layout(
    `Domain ${d.domain}`,
    who,
    html`<p>catch-all: ${d.catchall}; default quota ${d.defaultQuota}; clear passwords ${d.clearPasswords ? 'kept' : 'not kept'}; spam filing ${d.spamFiling ? 'on' : 'off'}</p>
<h2>Users</h2>
<table><tr><th>user</th><th>name</th><th>quota</th><th>usage</th><th>services</th><th>spam filing</th></tr>
${d.users.map(
  (u) => html`<tr><td><a href="${base}/users/${encodeURIComponent(u.name)}">${u.address}</a>${u.domainAdmin ? ' (admin)' : ''}</td><td>${u.realName}</td><td>${u.quota}</td><td>${u.usage ? `${bytes(u.usage.bytes)}, ${u.usage.count} msgs${u.quota !== 'NOQUOTA' ? `, ${u.usage.percent}%` : ''}` : ''}</td>
<td>${Object.entries(u.services).filter(([, on]) => !on).map(([s]) => `no ${s}`).join(', ') || 'all'}</td><td>${String(u.spamFiling)}</td></tr>`,
)}</table>
<h3>Add a user</h3>
${form(
  who,
  back,
  `${base}/users`,
  html`<label>name <input name="name" required></label>@${d.domain} <label>password <input name="password" type="password" autocomplete="new-password" required></label> <label>quota <input name="quota" placeholder="${d.defaultQuota}"></label> <label>real name <input name="realName"></label>`,
  'add user',
)}
<h2>Aliases and forwards</h2>
<table><tr><th>alias</th><th>forwards to</th></tr>
${d.aliases.map(
  (a) => html`<tr><td>${a.alias}</td><td>${a.targets.map((t) => html`${t} ${form(who, back, `${base}/aliases/${encodeURIComponent(a.name)}/remove`, html`<input type="hidden" name="target" value="${t}">`, 'remove', true)}<br>`)}</td></tr>`,
)}</table>
${form(who, back, `${base}/aliases`, html`<label>alias <input name="name" required></label>@${d.domain} <label>forward to <input name="target" type="email" required></label>`, 'add alias')}
<h2>Catch-all</h2>
<p>Mail for addresses nobody has: ${d.catchall}</p>
${form(
  who,
  back,
  `${base}/catchall`,
  html`<label>what <select name="catchall"><option value="bounce">bounce</option><option value="delete">delete</option><option value="forward">forward to</option></select></label> <label>address <input name="address" type="email"></label>`,
  'set catch-all',
)}
${
  who.role === 'server'
    ? html`<h2>Domain settings (server admin)</h2>
${form(
  who,
  back,
  `${base}/settings`,
  html`<label>default quota <input name="defaultQuota" value="${d.defaultQuota}"></label> ${onOff('clearPasswords', 'keep clear passwords', d.clearPasswords)} ${onOff('spamFiling', 'spam filing', d.spamFiling)}`,
  'save settings',
)}
<h2>DKIM</h2>
${dkim ? form(who, back, `${base}/dkim`, html`<label>selector <input name="selector" placeholder="this month, e.g. 202601" pattern="[A-Za-z0-9-]+"></label>`, 'make a DKIM key') : ''}
<p class="muted">The DNS record to publish is shown once the key is made.</p>`
    : ''
}`,
  );
}

function userPage(who: Who, domain: string, u: ReturnType<typeof userView>, forwarding: { addresses: string[]; keepCopy: boolean }): Html {
  const base = `/domains/${encodeURIComponent(domain)}/users/${encodeURIComponent(u.name)}`;
  const back = base;
  return layout(
    `User ${u.address}`,
    who,
    html`<p><a href="/domains/${encodeURIComponent(domain)}">back to ${domain}</a></p>
<p>quota ${u.quota}; usage ${u.usage ? `${bytes(u.usage.bytes)}, ${u.usage.count} messages${u.quota !== 'NOQUOTA' ? `, ${u.usage.percent}%` : ''}` : ''}; last login ${u.lastAuth ? `${u.lastAuth.time} from ${u.lastAuth.ip} (${u.lastAuth.service})` : 'never'}</p>
<p>forwards to: ${forwarding.addresses.join(', ') || 'nobody (mail stays in the mailbox)'}${forwarding.keepCopy ? ', keeping a copy' : ''}</p>
<h2>Password</h2>
${form(who, back, `${base}/password`, html`<label>new password <input name="password" type="password" autocomplete="new-password" required></label>`, 'set password')}
<h2>Quota</h2>
${form(who, back, `${base}/quota`, html`<label>quota <input name="quota" value="${u.quota}" required></label>`, 'set quota')}
<h2>Services</h2>
${form(
  who,
  back,
  `${base}/services`,
  html`${Object.entries(u.services).map(([s, on]) => onOff(s, s, on))}${who.role === 'server' ? onOff('domainAdmin', 'domain admin', u.domainAdmin) : ''}`,
  'save services',
)}
<h2>Spam filing</h2>
${form(who, back, `${base}/spam`, spamSelect(u.spamFiling), 'save')}
<h2>Delete</h2>
${form(who, '/domains/' + encodeURIComponent(domain), `${base}/delete`, '', `delete ${u.address} and all its mail`)}`,
  );
}

interface MeData {
  address: string;
  role: string;
  mailbox: (ReturnType<typeof userView> & { forwarding: { addresses: string[]; keepCopy: boolean }; vacation: { enabled: boolean; state: string; start: string | null; end: string | null; subject: string | null; body: string } | null }) | null;
}

const dateInput = (iso: string | null, edge: 'start' | 'end') => {
  if (!iso) return '';
  const d = new Date(iso);
  if (edge === 'end') d.setDate(d.getDate() - 1); // an end date means through that day
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
};

function mePage(who: Who, me: MeData): Html {
  const m = me.mailbox;
  const back = '/me';
  if (!m) return layout('My account', who, html`<p>${who.address} has no mailbox on this server.</p>`);
  const v = m.vacation;
  return layout(
    'My mailbox',
    who,
    html`<p>${m.address}: quota ${m.quota}; ${m.usage ? `${bytes(m.usage.bytes)} in ${m.usage.count} messages${m.quota !== 'NOQUOTA' ? ` (${m.usage.percent}% of the quota)` : ''}` : ''}</p>
<h2>Password</h2>
${form(
  who,
  back,
  '/me/password',
  html`<label>old password <input name="oldPassword" type="password" autocomplete="current-password" required></label> <label>new password <input name="password" type="password" autocomplete="new-password" required></label>`,
  'change password',
)}
<h2>Forwarding</h2>
${form(
  who,
  back,
  '/me/forward',
  html`<label>forward to (addresses, comma separated; empty: no forwarding) <input name="addresses" size="50" value="${m.forwarding.addresses.join(', ')}"></label> <label><input type="checkbox" name="keepCopy" value="on"${m.forwarding.keepCopy ? html` checked` : ''}> keep a copy here</label>`,
  'save forwarding',
)}
<h2>Vacation reply</h2>
<p>${v ? `${v.enabled ? `on (${v.state})` : 'off'}${v.start ? `, from ${formatWhen(Date.parse(v.start))}` : ''}${v.end ? `, until ${formatWhen(Date.parse(v.end))}` : ''}` : 'off'}</p>
${form(
  who,
  back,
  '/me/vacation',
  html`${onOff('enabled', 'reply', v?.enabled ?? false)} <label>from <input type="date" name="start" value="${dateInput(v?.start ?? null, 'start')}"></label> <label>through <input type="date" name="end" value="${dateInput(v?.end ?? null, 'end')}"></label><br>
<label>subject <input name="subject" size="50" value="${v?.subject ?? ''}"></label><br><label>text<br><textarea name="body" rows="6" cols="60">${v?.body ?? ''}</textarea></label><br>`,
  'save vacation reply',
)}
<h2>Spam filing</h2>
${form(who, back, '/me/spam', spamSelect(m.spamFiling), 'save')}`,
  );
}

function actionFor(method: 'GET', path: string) {
  return ACTIONS.find((a) => a.method === method && a.path === path)!;
}

export function registerPages(app: FastifyInstance, ctx: WebadminContext, https: boolean): void {
  const page = (role: 'server' | 'domain' | 'user', render: (who: Who, req: FastifyRequest) => Promise<Html>) => async (req: FastifyRequest, reply: FastifyReply) => {
    const who = await whoIs(ctx, req);
    if (!who) return reply.code(303).header('location', '/login').send();
    const params = req.params as Record<string, string>;
    if (!allowed({ role }, who, params)) return sendError(reply, true, 403, `this page is not for a ${ROLE_WORDS[who.role]}`, who);
    try {
      return reply.type('text/html; charset=utf-8').send((await render(who, req)).text);
    } catch (err) {
      if (err instanceof ActionError) return sendError(reply, true, err.status, err.message, who);
      throw err;
    }
  };
  const read = async <T>(who: Who, path: string, params: Record<string, string> = {}, query: Record<string, string> = {}) =>
    (await actionFor('GET', path).run({ ctx, who, params, body: {}, query })).data as T;

  app.get('/webadmin.css', async (_req, reply) => reply.type('text/css; charset=utf-8').header('cache-control', 'max-age=3600').send(CSS));

  app.get('/', async (req, reply) => {
    const who = await whoIs(ctx, req);
    const to = !who ? '/login' : who.role === 'server' ? '/admin' : who.role === 'domain' ? `/domains/${encodeURIComponent(who.domain)}` : '/me';
    return reply.code(303).header('location', to).send();
  });

  app.get('/login', async (req, reply) => {
    if (await whoIs(ctx, req)) return reply.code(303).header('location', '/').send();
    const existing = ctx.sessions.get(req.cookies[COOKIE]);
    const session = existing && !existing.address ? existing : ctx.sessions.create(undefined);
    reply.setCookie(COOKIE, session.id, cookieOptions(https));
    return reply.type('text/html; charset=utf-8').send(loginPage(session, '', undefined).text);
  });

  app.get(
    '/admin',
    page('server', async (who, req) => {
      const domains = await read<{ domains: Array<ReturnType<typeof domainView> & { users: number }> }>(who, '/domains');
      let queue: QueueView;
      try {
        queue = await read<QueueView>(who, '/queue');
      } catch (err) {
        queue = { messages: [], error: (err as Error).message };
      }
      let refused: RefusalsView;
      try {
        refused = await read<RefusalsView>(who, '/refusals');
      } catch (err) {
        refused = { journal: true, refusals: [], error: (err as Error).message };
      }
      const q = (req.query as Record<string, string>).why?.trim();
      let whyResult: { query: string; text?: string; error?: string } | undefined;
      if (q) {
        try {
          whyResult = { query: q, text: (await read<{ text: string }>(who, '/why', {}, { q })).text };
        } catch (err) {
          whyResult = { query: q, error: (err as Error).message };
        }
      }
      return adminPage(who, domains.domains, queue, refused, whyResult);
    }),
  );

  app.get(
    '/domains/:domain',
    page('domain', async (who, req) => {
      const params = req.params as Record<string, string>;
      return domainPage(who, await read<DomainData>(who, '/domains/:domain', params), true);
    }),
  );

  app.get(
    '/domains/:domain/users/:user',
    page('domain', async (who, req) => {
      const params = req.params as Record<string, string>;
      const data = await read<ReturnType<typeof userView> & { forwarding: { addresses: string[]; keepCopy: boolean } }>(who, '/domains/:domain/users/:user', params);
      return userPage(who, params.domain!.toLowerCase(), data, data.forwarding);
    }),
  );

  app.get(
    '/me',
    page('user', async (who) => mePage(who, await read<MeData>(who, '/me'))),
  );
}
