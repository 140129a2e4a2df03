/**
 * Bounce, delay-notice and success-notice writing: the DSN for recipients
 * that failed, are still waiting past the warning time, or were delivered
 * with NOTIFY=SUCCESS; to the sender, or to the postmaster for a failed
 * bounce, injected into the queue like any message.
 */
import type { Logger } from 'pino';
import type { QueueConfig } from '../config/schema.js';
import { rfc5322Date } from '../date.js';
import type { Clock } from '../services/clock.js';
import type { LocalDomains } from '../services/local-domains.js';
import { buildBounce, readHeaderSection, type ReportedRecipient, type ReportKind } from './bounce.js';
import { envelopeIdOf, originalRecipientOf, recipientParams, returnsFullMessage } from './dsn.js';
import type { QueuedMessage } from './delivery-context.js';
import type { RecipientState, Spool } from './spool.js';

export interface NoticeDeps {
  readonly spool: Spool;
  readonly clock: Clock;
  readonly log: Logger;
  readonly localDomains: LocalDomains;
  readonly hostname: string;
  readonly queue: () => QueueConfig;
}

/** RET=FULL returns the whole message up to this size; a bigger one comes back as its headers (Postfix's bounce_size_limit, more generous). */
const FULL_RETURN_LIMIT = 1024 * 1024;

const EVENT: Record<ReportKind, string> = { failure: 'bounce', delay: 'delay-notice', success: 'success-notice' };

export class Notices {
  constructor(private readonly deps: NoticeDeps) {}

  /**
   * A report on these recipients (a bounce, a delay notice or a success
   * notice), injected into the queue like any message. For a success notice
   * each recipient's `notified` says whether it was delivered or relayed.
   */
  async send(msg: QueuedMessage, rcpts: RecipientState[], kind: ReportKind): Promise<void> {
    const { spool, log, clock, hostname } = this.deps;
    const env = msg.envelope;
    const origin = env.kind ?? 'message';
    if (origin === 'double-bounce') {
      // qmail's triple bounce: nobody is left to tell.
      log.warn({ event: 'bounce', id: msg.id, rcpts: rcpts.map((r) => r.address), result: 'discarded' }, `triple bounce: discarding the failed double bounce ${msg.id}`);
      return;
    }
    const q = this.deps.queue();
    const double = env.sender === '';
    const requireTls = env.senderParams.REQUIRETLS === true;
    // Nothing is ever sent to the null sender: a failed bounce goes to the postmaster.
    const to = double ? (q.doubleBounceTo ?? `postmaster@${this.deps.localDomains.has(hostname) ? hostname : (this.deps.localDomains.list()[0] ?? hostname)}`) : env.sender;
    const now = clock.now();
    const action = (r: RecipientState): ReportedRecipient['action'] => (kind === 'failure' ? 'failed' : kind === 'delay' ? 'delayed' : (r.notified ?? 'delivered'));
    const content = buildBounce({
      hostname,
      from: `${q.bounceFrom}@${hostname}`,
      to,
      queueId: msg.id,
      arrival: env.received,
      now,
      kind,
      recipients: rcpts.map((r) => ({ ...r, action: action(r), originalRecipient: originalRecipientOf(recipientParams(env.recipients, r.address)) })),
      // RFC 8689 5: the report on a REQUIRETLS message travels under REQUIRETLS too, and carries its headers only.
      original: await this.original(msg, kind === 'failure' && !double && !requireTls && returnsFullMessage(env.senderParams)),
      double,
      envelopeId: envelopeIdOf(env.senderParams),
    });
    const id = await spool.inject(content, {
      sender: '',
      senderParams: requireTls ? { REQUIRETLS: true } : {},
      recipients: [{ address: to, params: {} }],
      received: now,
      listener: 'bounce',
      remoteIp: '127.0.0.1',
      heloName: undefined,
      authUser: undefined,
      prependHeaders: `Received: (yubin ${kind === 'failure' ? 'bounce' : kind === 'delay' ? 'delay notice' : 'success notice'} for ${msg.id}); ${rfc5322Date(now)}\r\n`,
      kind: double ? 'double-bounce' : 'bounce',
    });
    const what = kind === 'failure' ? (double ? 'double bounce' : 'bounce') : kind === 'delay' ? 'delay notice' : 'success notice';
    log.info({ event: EVENT[kind], id: msg.id, bounceId: id, to, rcpts: rcpts.map((r) => r.address) }, `${what} msg ${msg.id} to <${to}> as ${id}`);
  }

  /** What of the message goes back: its headers, or all of it (RET=FULL) when not too big. */
  private async original(msg: QueuedMessage, full: boolean): Promise<Parameters<typeof buildBounce>[0]['original']> {
    const { spool } = this.deps;
    const env = msg.envelope;
    if (full && env.size <= FULL_RETURN_LIMIT) {
      const chunks: Buffer[] = [];
      for await (const chunk of (await spool.openMessage(msg.id, env)) as AsyncIterable<Buffer>) chunks.push(chunk);
      return { headersOnly: false, message: Buffer.concat(chunks) };
    }
    return { headersOnly: true, text: await readHeaderSection(await spool.openMessage(msg.id, env)) };
  }
}
