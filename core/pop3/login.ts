/**
 * One POP3 login, whatever the command (USER/PASS, APOP, AUTH PLAIN):
 * the shared failed-login throttle, the auth hook, the mailbox the accepting
 * plugin names, its lock and its scan. Each attempt is one log line.
 *
 * A client learns only "failed": never whether the user exists, nor which
 * plugin said no (the log says it).
 */
import type { Logger } from 'pino';
import type { HookInput } from '../hooks.js';
import { authenticate, listenerLogin, type LoginDecision, type LoginResult } from '../session/authenticate.js';
import type { ListenerRuntime, SessionEnv } from '../session/runtime.js';
import type { Pop3Connection } from './connection.js';
import { mailboxKey, takeMailboxEverywhere } from './mailbox-lock.js';
import { cleanTmp, MaildirBox } from './maildir-box.js';
import type { HookScope } from '../hook-scope.js';

export type LoginMethod = 'USER' | 'APOP' | 'PLAIN';

export interface Credentials {
  readonly method: LoginMethod;
  readonly username: string;
  /** The clear password; undefined for APOP. */
  readonly password: string | undefined;
  verify(secret: string): boolean;
}

export type LoginOutcome =
  | { readonly ok: true; readonly box: MaildirBox; readonly release: () => void; readonly reply: string }
  /** `reply` undefined: close without a word (a plugin's silent disconnect). */
  | { readonly ok: false; readonly reply: string | undefined; readonly close: boolean };

type Result = 'ok' | 'failed' | 'locked-out' | 'no-mailbox' | 'in-use' | 'deferred' | 'disconnected' | 'error';

/** Each attempt's `result` on its log line, from what authenticate() came to. */
const RESULTS: Record<LoginResult['kind'], Result> = { locked: 'locked-out', accepted: 'ok', failed: 'failed', deferred: 'deferred', disconnected: 'disconnected' };

/** An accepted login's mailbox, or why it has none; `decision` replaces the accept in the metrics and the log. */
interface Admitted {
  readonly decision: LoginDecision | undefined;
  readonly result: Result;
  readonly extra: Record<string, unknown>;
  readonly outcome: LoginOutcome;
}

/** Hook texts go on a reply line: no line breaks or NULs from a plugin may split it. */
export function oneLine(text: string): string {
  return text.replace(/[\r\n\0]+/g, ' ');
}

export class Login {
  private failures = 0;

  constructor(
    private readonly runtime: ListenerRuntime,
    private readonly env: SessionEnv,
    private readonly connection: Pop3Connection,
    private readonly log: Logger,
    /** The connection's: aborted when it closes. */
    private readonly scope?: HookScope,
  ) {}

  async attempt(c: Credentials): Promise<LoginOutcome> {
    const { method, username } = c;
    let maildir: string | undefined;
    const ctx: HookInput<'auth'> = {
      connection: this.connection,
      method,
      username,
      password: c.password,
      verify: (secret) => c.verify(secret),
      mailbox: (dir) => {
        maildir = dir;
      },
    };
    /** What the accepted login came to: its mailbox, or why not. */
    let admitted: Admitted | undefined;
    const r = await authenticate(
      {
        ...listenerLogin(this.runtime, this.env, this.log, this.scope),
        admit: async (r) => {
          admitted = await this.admit(r.plugin, maildir, r.answer.code);
          return admitted.decision;
        },
        record: (d, r) => {
          const result: Result = admitted?.result ?? RESULTS[r.kind];
          // An accept's text is the plugin's own ("OK"): the line says where the mailbox is instead.
          const reason = d.action === 'accept' ? undefined : d.reason;
          this.log.info(
            { event: 'login', hook: 'auth', plugin: d.plugin, action: d.action, code: d.code, reason, user: c.username, method: c.method, result, ...admitted?.extra },
            `login ${result}: ${c.username} (${c.method}) by ${d.plugin}${reason ? ': ' + reason : ''}`,
          );
        },
      },
      ctx,
    );
    switch (r.kind) {
      case 'locked':
        if (r.verdict.unavailable) return this.failed('-ERR [SYS/TEMP] Temporary authentication failure');
        return this.failed('-ERR [SYS/TEMP] Too many failed logins, try again later');
      case 'accepted':
        return admitted!.outcome;
      case 'deferred':
        return { ok: false, reply: `-ERR [SYS/TEMP] ${oneLine(r.answer.text)}`, close: false };
      case 'disconnected':
        return { ok: false, reply: r.answer.silent ? undefined : `-ERR ${oneLine(r.answer.text)}`, close: true };
    }
    return this.failed('-ERR [AUTH] Authentication failed');
  }

  /** The mailbox an accepted login names: there, not locked by another session, readable. */
  private async admit(plugin: string, maildir: string | undefined, code: number): Promise<Admitted> {
    const refused = (action: 'reject' | 'defer', code: number, reason: string, result: Result, reply: string, extra: Record<string, unknown> = {}): Admitted => ({
      decision: { plugin, action, code, reason, counted: true },
      result,
      extra,
      outcome: { ok: false, reply, close: false },
    });
    if (maildir === undefined) return refused('reject', 550, 'login accepted without a mailbox', 'no-mailbox', '-ERR [SYS/PERM] no mailbox for this user');
    let release: (() => void) | undefined;
    try {
      release = await takeMailboxEverywhere(await mailboxKey(maildir));
    } catch (err) {
      this.log.error({ err, maildir }, 'cannot lock the mailbox');
      return refused('defer', 451, `cannot lock the mailbox: ${(err as Error).message}`, 'error', '-ERR [SYS/TEMP] cannot open the mailbox, try again later', { maildir });
    }
    if (!release) return refused('defer', 450, 'mailbox locked by another POP3 session', 'in-use', '-ERR [IN-USE] Mailbox is locked by another POP3 session', { maildir });
    let box: MaildirBox;
    try {
      box = await MaildirBox.open(maildir);
    } catch (err) {
      release();
      this.log.error({ err, maildir }, 'cannot read the mailbox');
      return refused('defer', 451, `cannot read the mailbox: ${(err as Error).message}`, 'error', '-ERR [SYS/TEMP] cannot open the mailbox, try again later', { maildir });
    }
    cleanTmp(maildir).then(
      (removed) => {
        if (removed > 0) this.log.info({ event: 'maildir-tmp', maildir, removed }, `removed ${removed} stale files from tmp/`);
      },
      (err: Error) => this.log.warn({ err: err.message, maildir }, 'cannot clean tmp/'),
    );
    const { count, octets } = box.stat();
    return {
      decision: undefined,
      result: 'ok',
      extra: { maildir, messages: count, octets },
      outcome: { ok: true, box, release, reply: `+OK maildrop has ${count} messages (${octets} octets)` },
    };
  }

  private failed(reply: string): LoginOutcome {
    this.failures++;
    const close = this.failures >= this.runtime.config.limits.maxAuthFailures;
    if (close) this.log.info({ event: 'auth-failures', failures: this.failures }, `${this.failures} failed logins on this connection, closing`);
    return { ok: false, reply, close };
  }
}
