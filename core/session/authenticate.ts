/**
 * One login attempt, whatever the protocol (SMTP AUTH, POP3 USER/PASS, APOP,
 * AUTH PLAIN): the failed-login throttle keyed on the canonical account, the
 * auth hook, the throttle told how it went, the decision counted in the
 * metrics and handed to the protocol for its log line. SMTP and POP3 only
 * turn the result into their own replies (and the line into their own shape:
 * the journal and syslog read both).
 */
import type { Logger } from 'pino';
import type { Accept, Defer, Disconnect, Reject } from '../answers.js';
import type { HookInput } from '../hooks.js';
import type { Pipeline } from '../pipeline.js';
import type { HookScope } from '../hook-scope.js';
import type { Metrics } from '../services/metrics.js';
import { loginTurn, type LoginThrottle, type ThrottleVerdict } from '../services/login-throttle.js';
import type { ListenerRuntime, SessionEnv } from './runtime.js';

type Accepted = { readonly kind: 'accepted'; readonly plugin: string; readonly answer: Accept };

export type LoginResult = { readonly account: string } & (
  | { readonly kind: 'locked'; readonly verdict: ThrottleVerdict }
  | Accepted
  /** `answer` undefined: every plugin passed, nobody vouched for the credentials. */
  | { readonly kind: 'failed'; readonly plugin: string | undefined; readonly answer: Reject | undefined }
  /** `fault`: the pipeline's 451 for a plugin that threw or timed out (it logged that itself). */
  | { readonly kind: 'deferred'; readonly plugin: string; readonly answer: Defer; readonly fault: boolean }
  | { readonly kind: 'disconnected'; readonly plugin: string; readonly answer: Disconnect }
);

/** What was decided on one attempt, as it is counted and logged. */
export interface LoginDecision {
  readonly plugin: string;
  readonly action: 'accept' | 'reject' | 'defer' | 'disconnect';
  readonly code: number;
  readonly reason: string | undefined;
  /** Counted in the metrics: not a plugin fault, which the pipeline counted and logged itself. */
  readonly counted: boolean;
}

export interface LoginFlow {
  readonly pipeline: Pipeline;
  readonly throttle: LoginThrottle;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** The connection's; the auth hook's run is stopped when it ends (the connection closed). */
  readonly scope?: HookScope;
  /**
   * What an accepted login still needs before it is counted (POP3: the
   * mailbox the plugin named, locked and read). A decision returned replaces
   * the hook's accept in the metrics and the log; the throttle has already
   * been told the credentials were good.
   */
  admit?(r: Accepted): Promise<LoginDecision | undefined>;
  /** Writes the attempt's log line, in the protocol's own shape; after the metrics have counted `d`. */
  record(d: LoginDecision, r: LoginResult): void;
}

/** The decision the auth hook (or the throttle) made, before the protocol has a say. */
export function loginDecision(r: LoginResult): LoginDecision {
  switch (r.kind) {
    case 'locked':
      // No password is checked while locked out: guessing learns nothing.
      if (r.verdict.unavailable) return { plugin: 'core', action: 'defer', code: 454, reason: 'login throttle unavailable (shared store down, onStoreFailure: closed)', counted: true };
      return { plugin: 'core', action: 'defer', code: 454, reason: `locked out after ${r.verdict.failures} failed logins (by ${r.verdict.by})`, counted: true };
    case 'accepted':
      return { plugin: r.plugin, action: 'accept', code: r.answer.code, reason: r.answer.text, counted: true };
    case 'deferred':
      return { plugin: r.plugin, action: 'defer', code: r.answer.code, reason: r.fault ? 'plugin fault' : r.answer.text, counted: !r.fault };
    case 'disconnected':
      return { plugin: r.plugin, action: 'disconnect', code: r.answer.code, reason: r.answer.text, counted: true };
    case 'failed':
      // Every plugin passed, or one refused: either way the credentials failed.
      if (r.answer) return { plugin: r.plugin ?? 'core', action: 'reject', code: r.answer.code, reason: r.answer.text, counted: true };
      return { plugin: 'core', action: 'reject', code: 535, reason: 'no plugin accepted these credentials', counted: true };
  }
}

/** The parts of a LoginFlow every listener takes from the same places: its plugins, the shared throttle, the metrics. */
export function listenerLogin(runtime: ListenerRuntime, env: SessionEnv, log: Logger, scope: HookScope | undefined): Pick<LoginFlow, 'pipeline' | 'throttle' | 'metrics' | 'log' | 'scope'> {
  return { pipeline: runtime.pipeline, throttle: env.services.loginThrottle, metrics: env.metrics, log, scope };
}

export async function authenticate(flow: LoginFlow, ctx: HookInput<'auth'>): Promise<LoginResult> {
  const r = await decide(flow, ctx);
  const d = (r.kind === 'accepted' && flow.admit ? await flow.admit(r) : undefined) ?? loginDecision(r);
  if (d.counted) flow.metrics.decision('auth', d.plugin, d.action);
  flow.record(d, r);
  return r;
}

/** Throttle, auth hook, throttle settled. */
async function decide(flow: LoginFlow, ctx: HookInput<'auth'>): Promise<LoginResult> {
  const { pipeline, throttle, log, scope } = flow;
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
