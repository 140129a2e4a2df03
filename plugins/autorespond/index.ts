/**
 * autorespond: vacation replies at delivery, as qmail's `autorespond` did
 * from a vpopmail user's .qmail. In `delivery.plugins` before the mailbox
 * plugin: for a local recipient whose vacation is on and current, the
 * message's sender gets one reply per vacation period (RFC 3834: from <>,
 * Auto-Submitted: auto-replied, never to lists, daemons or automatic mail),
 * queued with `delivery.send`; then the hook answers `continue` and the
 * mailbox plugin delivers the message as always. Settings are kept in the
 * plugin's own SQLite file (`yubin vacation`), read at every delivery.
 */
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import { answer, definePlugin, readHeaderSection, type Clock, type Delivery } from '../../core/index.js';
import { registerVacationCommands } from './cli.js';
import { autorespondOptions, databasePath } from './options.js';
import { buildReply } from './reply.js';
import { parseHeaderSection, shouldReply } from './rules.js';
import { normalizeAddress, vacationState, Vacations } from './settings.js';

interface Env {
  readonly vacations: () => Vacations | undefined;
  readonly clock: Clock;
  readonly hostname: string;
  readonly log: Logger;
}

export default definePlugin({
  name: 'autorespond',
  options: autorespondOptions,
  // It answers `continue` and leaves the message to the mailbox plugin: it must run first.
  before: ['vpopmail', 'maildir'],
  // yubin vacation set|off|show|list
  commands: ({ program, configOption }) => registerVacationCommands(program, configOption),
  setup({ options, dataDir, hostname, services, log }) {
    const file = databasePath(options, dataDir);
    let vacations: Vacations | undefined;
    // Opened once the first `yubin vacation set` made the file: a server nobody set a vacation on creates none.
    const open = () => (vacations ??= existsSync(file) ? new Vacations(file, () => services.clock.now()) : undefined);
    const env: Env = { vacations: open, clock: services.clock, hostname, log };
    return {
      hooks: {
        // It takes no address itself; serving verify (continue) keeps the core's RCPT check of
        // unknown local users on, which needs every deliver plugin to verify.
        verify: () => answer.continue(),
        async deliver({ delivery }) {
          if (!delivery.local) return answer.continue();
          try {
            await respond(env, delivery);
          } catch (err) {
            // A reply that fails never holds the message: the mailbox plugin still delivers it.
            log.warn({ id: delivery.queueId, rcpt: delivery.recipient.address, sender: delivery.sender?.address ?? '', decision: 'error', err: (err as Error).message }, `no reply for ${delivery.recipient.address}: ${(err as Error).message}`);
          }
          return answer.continue();
        },
      },
      close() {
        vacations?.close();
      },
    };
  },
});

/** One delivery: reply or not, and one log line saying which and why. */
async function respond(env: Env, delivery: Delivery): Promise<void> {
  const store = env.vacations();
  const rcpt = store && normalizeAddress(delivery.recipient.address);
  const vacation = rcpt ? store!.get(rcpt) : undefined;
  if (!store || !rcpt || !vacation) return;
  const now = env.clock.now();
  const sender = delivery.sender?.address ?? '';
  const fields = { id: delivery.queueId, rcpt, sender };
  const state = vacationState(vacation, now);
  if (state !== 'active') {
    env.log.debug({ ...fields, decision: 'not-replied', reason: `vacation ${state}` }, `not replied to <${sender}> for ${rcpt}: vacation ${state}`);
    return;
  }
  const headers = parseHeaderSection(await readHeaderSection(delivery.message.stream()));
  const verdict = shouldReply({ sender, recipient: rcpt, headers });
  const notReplied = (reason: string) => env.log.info({ ...fields, decision: 'not-replied', reason }, `not replied to <${sender}> for ${rcpt}: ${reason}`);
  if (!verdict.reply) return notReplied(verdict.reason);
  if (!store.claimReply(vacation, sender, now)) return notReplied('already replied to this sender in this vacation period');
  try {
    const message = await buildReply({ from: vacation.address, to: sender, subject: vacation.subject, body: vacation.body, original: headers, hostname: env.hostname, now });
    const replyId = await delivery.send({ sender: '', recipients: [sender], message });
    store.recordReply(vacation, sender, replyId);
    env.log.info({ ...fields, decision: 'replied', replyId }, `replied to <${sender}> for ${rcpt} as ${replyId}`);
  } catch (err) {
    // Not queued: the next message from this sender may try again.
    store.releaseReply(vacation, sender);
    throw err;
  }
}
