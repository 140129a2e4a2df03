/**
 * The delivery context: what a deliver plugin gets for one recipient of a
 * queued message (its envelope, the message shared with the other
 * recipients of the job, forward and send), and the deliver hook run over
 * it, its answer turned into an outcome the scheduler records.
 */
import type { Logger } from 'pino';
import { splitAddress } from '../address.js';
import { rfc5322Date } from '../date.js';
import type { HookScope } from '../hook-scope.js';
import type { HookInput, NewMessage } from '../hooks.js';
import type { Clock } from '../services/clock.js';
import type { RemoteOutcome } from './remote.js';
import type { DeliveryRuntime } from './scheduler.js';
import type { SharedMessage } from './shared-message.js';
import type { Envelope, RecipientState, Spool } from './spool.js';

type Outcome = RemoteOutcome;

/** A message being worked on, as far as delivering it goes. */
export interface QueuedMessage {
  readonly id: string;
  readonly envelope: Envelope;
}

export interface DeliveryContextDeps {
  readonly spool: Spool;
  readonly clock: Clock;
  readonly log: Logger;
  readonly runtime: () => DeliveryRuntime;
  /** Ends when the queue stops for good: every deliver hook in progress is stopped. */
  readonly stopping: HookScope;
}

export class DeliveryContext {
  constructor(private readonly deps: DeliveryContextDeps) {}

  /** What a deliver plugin gets for this recipient; `body` is the message as every recipient of the job shares it. */
  input(msg: QueuedMessage, rcpt: RecipientState, local: boolean, body: SharedMessage): HookInput<'deliver'> {
    const env = msg.envelope;
    return {
      delivery: {
        queueId: msg.id,
        sender: env.sender ? splitAddress(env.sender) : null,
        recipient: splitAddress(rcpt.address),
        local,
        attempt: rcpt.attempts + 1,
        received: env.received,
        message: {
          size: body.size,
          stream: () => body.stream(),
          read: () => body.read(),
        },
        forward: (recipients, headers = []) => this.forward(msg, body, recipients, headers),
        send: (message) => this.send(msg, message),
      },
    };
  }

  /** A deliver plugin's forward: a new message with the same sender, committed like any other. */
  private async forward(msg: QueuedMessage, body: SharedMessage, recipients: readonly string[], headers: readonly string[]): Promise<string> {
    const { spool, clock, log } = this.deps;
    const env = msg.envelope;
    if (!recipients.length) throw new Error('forward needs at least one recipient');
    const id = await spool.inject(await body.read(), {
      sender: env.sender,
      senderParams: {},
      recipients: recipients.map((address) => ({ address, params: {} })),
      received: clock.now(),
      listener: 'forward',
      remoteIp: '127.0.0.1',
      heloName: undefined,
      authUser: undefined,
      prependHeaders: headers.map((h) => `${h.replace(/[\r\n]+/g, ' ')}\r\n`).join(''),
      kind: env.kind ?? 'message',
    });
    log.info({ event: 'forward', id: msg.id, forwardId: id, to: recipients }, `forwarded msg ${msg.id} to ${recipients.join(', ')} as ${id}`);
    return id;
  }

  /** A deliver plugin's send: a new message with its own envelope (an auto-reply), committed like any other. */
  private async send(msg: QueuedMessage, message: NewMessage): Promise<string> {
    const { spool, clock, log } = this.deps;
    const sender = message.sender.trim();
    const recipients = message.recipients.map((r) => r.trim());
    if (!recipients.length) throw new Error('send needs at least one recipient');
    for (const a of sender ? [sender, ...recipients] : recipients) {
      if (!/^[^@\s<>()]+@[^@\s<>()]+$/.test(a)) throw new Error(`send: bad address ${JSON.stringify(a)}`);
    }
    // Stored as SMTP would store it: CRLF line ends, ending in one (latin1 keeps every byte as it is).
    const raw = typeof message.message === 'string' ? Buffer.from(message.message, 'utf8') : Buffer.from(message.message);
    const text = raw.toString('latin1').replace(/\r?\n/g, '\r\n');
    const content = Buffer.from(text.endsWith('\r\n') ? text : `${text}\r\n`, 'latin1');
    const now = clock.now();
    const id = await spool.inject(content, {
      sender,
      senderParams: {},
      recipients: recipients.map((address) => ({ address, params: {} })),
      received: now,
      listener: 'send',
      remoteIp: '127.0.0.1',
      heloName: undefined,
      authUser: undefined,
      prependHeaders: `Received: (yubin send for ${msg.id}); ${rfc5322Date(now)}\r\n`,
      kind: 'message',
    });
    log.info({ event: 'send', id: msg.id, sentId: id, sender, to: recipients }, `msg ${msg.id}: sent a new message from <${sender}> to ${recipients.join(', ')} as ${id}`);
    return id;
  }

  /** Runs the deliver hook; undefined when every plugin continued. */
  async viaPlugins(msg: QueuedMessage, rcpt: RecipientState, local: boolean, body: SharedMessage): Promise<Outcome | undefined> {
    const { pipeline, lease } = this.deps.runtime();
    if (!pipeline.has('deliver')) return undefined;
    lease.acquire();
    try {
      const { answer, plugin, fault, reason } = await pipeline.run('deliver', this.input(msg, rcpt, local, body), this.deps.log.child({ id: msg.id }), this.deps.stopping);
      const by = plugin ?? 'core';
      switch (answer.action) {
        case 'continue':
          return undefined;
        case 'accept':
          return { kind: 'delivered', text: `${by}: ${answer.text}` };
        case 'reject':
          return { kind: 'permanent', status: answer.enhanced ?? '5.0.0', text: answer.text, diagnostic: `${answer.code} ${answer.enhanced ?? ''} ${answer.text}`.replace('  ', ' ') };
        case 'defer':
          // A plugin fault is named in `queue list` and the logs: "deliver plugin maildir threw: EACCES ...".
          return { kind: 'temporary', status: answer.enhanced ?? '4.0.0', text: fault ? `deliver plugin ${by} ${reason ?? 'failed'}` : answer.text };
      }
    } finally {
      lease.release();
    }
  }
}
