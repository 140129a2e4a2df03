/**
 * Bounce and delay-notice writing: the DSN for recipients that failed (or
 * are still waiting past the warning time), to the sender, or to the
 * postmaster for a failed bounce, injected into the queue like any message.
 */
import type { Logger } from 'pino';
import type { QueueConfig } from '../config/schema.js';
import { rfc5322Date } from '../date.js';
import type { Clock } from '../services/clock.js';
import type { LocalDomains } from '../services/local-domains.js';
import { buildBounce, readHeaderSection } from './bounce.js';
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

export class Notices {
  constructor(private readonly deps: NoticeDeps) {}

  /** A bounce (or delay notice) for these recipients, injected into the queue like any message. */
  async send(msg: QueuedMessage, rcpts: RecipientState[], delayed: boolean): Promise<void> {
    const { spool, log, clock, hostname } = this.deps;
    const env = msg.envelope;
    const kind = env.kind ?? 'message';
    if (kind === 'double-bounce') {
      // qmail's triple bounce: nobody is left to tell.
      log.warn({ event: 'bounce', id: msg.id, rcpts: rcpts.map((r) => r.address), result: 'discarded' }, `triple bounce: discarding the failed double bounce ${msg.id}`);
      return;
    }
    const q = this.deps.queue();
    const double = env.sender === '';
    // Nothing is ever sent to the null sender: a failed bounce goes to the postmaster.
    const to = double ? (q.doubleBounceTo ?? `postmaster@${this.deps.localDomains.has(hostname) ? hostname : (this.deps.localDomains.list()[0] ?? hostname)}`) : env.sender;
    const now = clock.now();
    const originalHeaders = await readHeaderSection(await spool.openMessage(msg.id, env));
    const content = buildBounce({
      hostname,
      from: `${q.bounceFrom}@${hostname}`,
      to,
      queueId: msg.id,
      arrival: env.received,
      now,
      failed: rcpts,
      originalHeaders,
      double,
      delayed,
    });
    const id = await spool.inject(content, {
      sender: '',
      senderParams: {},
      recipients: [{ address: to, params: {} }],
      received: now,
      listener: 'bounce',
      remoteIp: '127.0.0.1',
      heloName: undefined,
      authUser: undefined,
      prependHeaders: `Received: (yubin ${delayed ? 'delay notice' : 'bounce'} for ${msg.id}); ${rfc5322Date(now)}\r\n`,
      kind: double ? 'double-bounce' : 'bounce',
    });
    log.info({ event: delayed ? 'delay-notice' : 'bounce', id: msg.id, bounceId: id, to, rcpts: rcpts.map((r) => r.address) }, `${delayed ? 'delay notice' : double ? 'double bounce' : 'bounce'} msg ${msg.id} to <${to}> as ${id}`);
  }
}
