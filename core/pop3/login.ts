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
import { authenticate } from '../session/authenticate.js';
import type { ListenerRuntime, SessionEnv } from '../session/runtime.js';
import type { Pop3Connection } from './connection.js';
import { lockMailbox, mailboxKey } from './mailbox-lock.js';
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
    const r = await authenticate(this.runtime.pipeline, this.env.services.loginThrottle, ctx, this.log, this.scope);
    switch (r.kind) {
      case 'locked':
        // No password is checked while locked out: guessing learns nothing.
        this.decision(c, 'core', 'defer', 454, `locked out after ${r.verdict.failures} failed logins (by ${r.verdict.by})`, 'locked-out');
        return this.failed('-ERR [SYS/TEMP] Too many failed logins, try again later');
      case 'accepted':
        if (maildir === undefined) {
          this.decision(c, r.plugin, 'reject', 550, 'login accepted without a mailbox', 'no-mailbox');
          return { ok: false, reply: '-ERR [SYS/PERM] no mailbox for this user', close: false };
        }
        return this.openMailbox(c, r.plugin, maildir, r.answer.code);
      case 'deferred':
        // A plugin fault is counted where the pipeline logs it.
        this.decision(c, r.plugin, 'defer', r.answer.code, r.fault ? 'plugin fault' : r.answer.text, 'deferred', {}, !r.fault);
        return { ok: false, reply: `-ERR [SYS/TEMP] ${oneLine(r.answer.text)}`, close: false };
      case 'disconnected':
        this.decision(c, r.plugin, 'disconnect', r.answer.code, r.answer.text, 'disconnected');
        return { ok: false, reply: r.answer.silent ? undefined : `-ERR ${oneLine(r.answer.text)}`, close: true };
    }
    if (r.answer) this.decision(c, r.plugin ?? 'core', 'reject', r.answer.code, r.answer.text, 'failed');
    // Every plugin passed: nobody vouched for these credentials.
    else this.decision(c, 'core', 'reject', 535, 'no plugin accepted these credentials', 'failed');
    return this.failed('-ERR [AUTH] Authentication failed');
  }

  private async openMailbox(c: Credentials, plugin: string, maildir: string, code: number): Promise<LoginOutcome> {
    const release = lockMailbox(await mailboxKey(maildir));
    if (!release) {
      this.decision(c, plugin, 'defer', 450, 'mailbox locked by another POP3 session', 'in-use', { maildir });
      return { ok: false, reply: '-ERR [IN-USE] Mailbox is locked by another POP3 session', close: false };
    }
    let box: MaildirBox;
    try {
      box = await MaildirBox.open(maildir);
    } catch (err) {
      release();
      this.log.error({ err, maildir }, 'cannot read the mailbox');
      this.decision(c, plugin, 'defer', 451, `cannot read the mailbox: ${(err as Error).message}`, 'error', { maildir });
      return { ok: false, reply: '-ERR [SYS/TEMP] cannot open the mailbox, try again later', close: false };
    }
    cleanTmp(maildir).then(
      (removed) => {
        if (removed > 0) this.log.info({ event: 'maildir-tmp', maildir, removed }, `removed ${removed} stale files from tmp/`);
      },
      (err: Error) => this.log.warn({ err: err.message, maildir }, 'cannot clean tmp/'),
    );
    const { count, octets } = box.stat();
    this.decision(c, plugin, 'accept', code, undefined, 'ok', { maildir, messages: count, octets });
    return { ok: true, box, release, reply: `+OK maildrop has ${count} messages (${octets} octets)` };
  }

  private failed(reply: string): LoginOutcome {
    this.failures++;
    const close = this.failures >= this.runtime.config.limits.maxAuthFailures;
    if (close) this.log.info({ event: 'auth-failures', failures: this.failures }, `${this.failures} failed logins on this connection, closing`);
    return { ok: false, reply, close };
  }

  private decision(c: Credentials, plugin: string, action: string, code: number, reason: string | undefined, result: Result, extra: Record<string, unknown> = {}, count = true): void {
    if (count) this.env.metrics.decision('auth', plugin, action);
    this.log.info(
      { event: 'login', hook: 'auth', plugin, action, code, reason, user: c.username, method: c.method, result, ...extra },
      `login ${result}: ${c.username} (${c.method}) by ${plugin}${reason ? ': ' + reason : ''}`,
    );
  }
}
