/**
 * maildir: local delivery into `dataDir/mail/DOMAIN/USER/Maildir`, the way
 * qmail-local delivers to `./Maildir/` — Return-Path and Delivered-To on
 * top, tmp then new, a message already carrying our Delivered-To line
 * refused as a loop. Any user of a local domain has a mailbox (created on
 * first delivery); the vpopmail plugin is the one that knows real users.
 */
import path from 'node:path';
import { z } from 'zod';
import { answer, definePlugin } from '../../core/index.js';
import { deliverToMaildir, LoopDetected } from '../../core/maildir.js';

const options = z.strictObject({
  /** Root of the mailboxes; relative to dataDir. */
  root: z.string().min(1).default('mail'),
  /** Domains this plugin delivers for; default every local domain. */
  domains: z.array(z.string().min(1)).optional(),
});

const NO_MAILBOX = answer.reject(550, '5.1.1', 'Sorry, no mailbox here by that name. (#5.1.1)');

/** The local part as a mailbox directory name, or undefined when it could climb out of root or hide as a dot file. */
function mailboxName(local: string): string | undefined {
  const user = local.toLowerCase();
  return !user || user.startsWith('.') || /[/\\\0]/.test(user) ? undefined : user;
}

export default definePlugin({
  name: 'maildir',
  options,
  setup({ options, dataDir, log }) {
    const root = path.resolve(dataDir, options.root);
    const domains = options.domains && new Set(options.domains.map((d) => d.toLowerCase()));
    return {
      hooks: {
        // Asked at RCPT: every valid name of our domains has a mailbox (made at first delivery).
        verify({ recipient }) {
          if (domains && !domains.has(recipient.domain)) return answer.continue();
          return mailboxName(recipient.local) === undefined ? NO_MAILBOX : answer.accept();
        },

        async deliver({ delivery }) {
          const { recipient, sender } = delivery;
          if (!delivery.local || (domains && !domains.has(recipient.domain))) return answer.continue();
          const user = mailboxName(recipient.local);
          if (user === undefined) return NO_MAILBOX;
          const dir = path.join(root, recipient.domain, user, 'Maildir');
          const deliveredTo = `Delivered-To: ${user}@${recipient.domain}`;
          try {
            const file = await deliverToMaildir(dir, {
              topLines: [`Return-Path: <${sender?.address ?? ''}>`, deliveredTo],
              message: delivery.message,
              loopLine: deliveredTo,
            });
            return answer.accept(`delivered to ${path.relative(root, path.join(dir, 'new', file))}`);
          } catch (err) {
            if (err instanceof LoopDetected) return answer.reject(554, '5.4.6', 'This message is looping: it already has my Delivered-To line. (#5.4.6)');
            log.warn({ queueId: delivery.queueId, rcpt: recipient.address, err: (err as Error).message }, 'maildir delivery failed');
            return answer.defer(451, '4.3.0', `Temporary error on maildir delivery. (#4.3.0)`);
          }
        },
      },
    };
  },
});
