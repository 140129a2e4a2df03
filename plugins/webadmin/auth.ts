/**
 * Who is asking: a session cookie or a bearer token names an address; the
 * address's role is worked out at each request from the config, the admin
 * database and the store, so a removed admin or a deleted user loses access
 * at once.
 */
import type { FastifyRequest } from 'fastify';
import type {} from '@fastify/cookie';
import { loginTurn } from '../../core/index.js';
import { parseAddress } from '../vpopmail/names.js';
import { hashPassword, verifyPassword } from '../vpopmail/passwords.js';
import type { WebadminContext } from './context.js';
import { COOKIE, type Session } from './sessions.js';

/** server: every domain and the queue; domain: one domain's users and aliases; user: their own page. */
export type Role = 'server' | 'domain' | 'user';

export interface Who {
  readonly address: string;
  readonly name: string;
  readonly domain: string;
  readonly role: Role;
  /** A session (cookie, CSRF checked on changes) or a bearer token (no CSRF: no browser sends it by itself). */
  readonly via: 'session' | 'token';
  readonly session: Session | undefined;
}

export async function roleOf(ctx: WebadminContext, address: string): Promise<Omit<Who, 'via' | 'session'> | undefined> {
  const a = parseAddress(address);
  if (!a) return undefined;
  const full = `${a.name}@${a.domain}`;
  if (ctx.options.admins.includes(full) || ctx.admins().isAdmin(full)) return { address: full, ...a, role: 'server' };
  const user = await ctx.store().getUser(a.domain, a.name);
  if (!user || !(await ctx.store().getDomain(a.domain))) return undefined;
  const role: Role = a.name === 'postmaster' || user.flags.domainAdmin ? 'domain' : 'user';
  return { address: full, ...a, role };
}

export function bearerToken(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  const m = h ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
  return m?.[1];
}

/**
 * The caller, or undefined when not logged in. A bearer header that does not
 * match a token is "not logged in" too (401), never a fallback to the cookie.
 */
export async function whoIs(ctx: WebadminContext, req: FastifyRequest): Promise<Who | undefined> {
  const token = bearerToken(req);
  if (token !== undefined || req.headers.authorization) {
    const address = token && ctx.admins().tokenAddress(token);
    const who = address ? await roleOf(ctx, address) : undefined;
    return who && { ...who, via: 'token', session: undefined };
  }
  const session = ctx.sessions.get(req.cookies[COOKIE]);
  if (!session?.address) return undefined;
  const who = await roleOf(ctx, session.address);
  return who && { ...who, via: 'session', session };
}

export type LoginOutcome = { readonly ok: true; readonly address: string } | { readonly ok: false; readonly status: 400 | 401 | 403 | 429; readonly message: string };

/** Checked when the user does not exist, so a wrong user name costs as long as a wrong password. */
let dummyHash: Promise<string> | undefined;

/**
 * A web login: the shared failed-login throttle (the same counts as SMTP AUTH
 * and POP3), then the vpopmail password. Users whose webmail flag is off
 * (vpopmail's NO_WEBMAIL) have no web access; server admins always do.
 */
export async function login(ctx: WebadminContext, ip: string, loginName: string, password: string): Promise<LoginOutcome> {
  const a = parseAddress(loginName.trim());
  if (!a || !password) return { ok: false, status: 400, message: 'give your full address (user@domain) and password' };
  const account = `${a.name}@${a.domain}`;
  const ticket = await loginTurn(ctx.services.loginThrottle, ip, account, account, 'webadmin', ctx.log);
  if (ticket.verdict.locked) {
    ctx.log.info({ event: 'webadmin-login', user: account, ip, result: 'throttled', by: ticket.verdict.by }, `webadmin login of ${account} refused: too many failed logins`);
    return { ok: false, status: 429, message: 'too many failed logins: try again later' };
  }
  try {
    const user = (await ctx.store().getDomain(a.domain)) ? await ctx.store().getUser(a.domain, a.name) : undefined;
    const good = user ? await verifyPassword(password, user.passwordHash) : await verifyPassword(password, await (dummyHash ??= hashPassword('no such user'))).then(() => false);
    if (!good) {
      ticket.failed();
      ctx.log.info({ event: 'webadmin-login', user: account, ip, result: 'failed' }, `webadmin login of ${account} failed`);
      // Once the throttle is on for the next try (slowed, as SMTP AUTH and POP3 are, or locked), the page says so.
      const next = await ctx.services.loginThrottle.preview(ip, account);
      if (next.locked) return { ok: false, status: 429, message: 'wrong address or password, and too many failed logins: try again later' };
      if (next.wait > 0) return { ok: false, status: 429, message: `wrong address or password, and too many failed logins: the next try waits ${Math.ceil(next.wait / 1000)} s` };
      return { ok: false, status: 401, message: 'wrong address or password' };
    }
    ticket.succeeded();
    const who = await roleOf(ctx, account);
    if (!who) return { ok: false, status: 401, message: 'wrong address or password' };
    if (who.role !== 'server' && user!.flags.noWebmail) {
      ctx.log.info({ event: 'webadmin-login', user: account, ip, result: 'disabled' }, `webadmin login of ${account} refused: web access is off for this user`);
      return { ok: false, status: 403, message: 'web access is turned off for this account' };
    }
    await ctx.store().recordLogin(a.domain, a.name, ctx.services.clock.now(), ip, 'webadmin');
    ctx.log.info({ event: 'webadmin-login', user: account, ip, role: who.role, result: 'ok' }, `webadmin login of ${account} (${who.role})`);
    return { ok: true, address: account };
  } catch (err) {
    ticket.released();
    throw err;
  }
}
