/**
 * One login attempt, whatever the protocol (SMTP AUTH, POP3 USER/PASS, APOP,
 * AUTH PLAIN): the failed-login throttle keyed on the canonical account, the
 * auth hook, and the throttle told how it went. SMTP and POP3 only turn the
 * result into their own replies and log lines.
 */
import type { Logger } from 'pino';
import type { Accept, Defer, Disconnect, Reject } from '../answers.js';
import type { HookInput } from '../hooks.js';
import type { Pipeline } from '../pipeline.js';
import type { HookScope } from '../hook-scope.js';
import { loginTurn, type LoginThrottle, type ThrottleVerdict } from '../services/login-throttle.js';

export type LoginResult = { readonly account: string } & (
  | { readonly kind: 'locked'; readonly verdict: ThrottleVerdict }
  | { readonly kind: 'accepted'; readonly plugin: string; readonly answer: Accept }
  /** `answer` undefined: every plugin passed, nobody vouched for the credentials. */
  | { readonly kind: 'failed'; readonly plugin: string | undefined; readonly answer: Reject | undefined }
  /** `fault`: the pipeline's 451 for a plugin that threw or timed out (it logged that itself). */
  | { readonly kind: 'deferred'; readonly plugin: string; readonly answer: Defer; readonly fault: boolean }
  | { readonly kind: 'disconnected'; readonly plugin: string; readonly answer: Disconnect }
);

/** `scope`: the connection's; the auth hook's run is stopped when it ends (the connection closed). */
export async function authenticate(pipeline: Pipeline, throttle: LoginThrottle, ctx: HookInput<'auth'>, log: Logger, scope?: HookScope): Promise<LoginResult> {
  const account = pipeline.loginAccount(ctx.username);
  const ticket = await loginTurn(throttle, ctx.connection.remoteIp, account, ctx.username, ctx.method, log);
  if (ticket.verdict.locked) return { account, kind: 'locked', verdict: ticket.verdict };
  const { answer: a, plugin, fault } = await pipeline.run('auth', ctx, log, scope);
  switch (a.action) {
    case 'accept':
      ticket.succeeded();
      return { account, kind: 'accepted', plugin: plugin!, answer: a };
    case 'defer':
      ticket.released();
      return { account, kind: 'deferred', plugin: plugin!, answer: a, fault };
    case 'disconnect':
      ticket.released();
      return { account, kind: 'disconnected', plugin: plugin!, answer: a };
    default:
      ticket.failed();
      return { account, kind: 'failed', plugin, answer: a.action === 'reject' ? a : undefined };
  }
}
