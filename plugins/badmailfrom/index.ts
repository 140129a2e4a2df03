/**
 * badmailfrom: qmail's envelope sender block list. Entries are full
 * addresses or `@domain` (that domain exactly, not its subdomains),
 * compared case-insensitively. As in qmail-smtpd, MAIL itself gets 250 and
 * every RCPT after it gets 553, so the sending MTA records the refusal
 * against each recipient.
 */
import { z } from 'zod';
import { answer, controlLines, definePlugin, WatchedFile } from '../../core/index.js';

declare module '../../core/hooks.js' {
  interface TransactionState {
    /** The badmailfrom entry the sender matched. */
    badmailfrom?: string;
  }
}

const options = z.strictObject({
  /** Addresses and `@domain` entries. */
  addresses: z.array(z.string().min(1)).default([]),
  /** A qmail control/badmailfrom file; read again when it changes. */
  file: z.string().min(1).optional(),
});

const REFUSAL = answer.reject(553, '5.7.1', 'sorry, your envelope sender is in my badmailfrom list (#5.7.1)');

const parseEntries = (text: string) => new Set(controlLines(text).map((e) => e.toLowerCase()));

export default definePlugin({
  name: 'badmailfrom',
  options,
  async setup({ options, log, resolvePath }) {
    const fixed = new Set(options.addresses.map((a) => a.toLowerCase()));
    const file = options.file ? await WatchedFile.open(resolvePath(options.file), parseEntries, { log }) : undefined;
    const match = async (address: string, domain: string): Promise<string | undefined> => {
      const lists = [fixed, ...(file ? [await file.get()] : [])];
      const addr = address.toLowerCase();
      for (const list of lists) {
        if (list.has(addr)) return addr;
        if (list.has(`@${domain}`)) return `@${domain}`;
      }
      return undefined;
    };
    return {
      hooks: {
        async mail({ sender, transaction }) {
          // The null sender (bounces) is never in badmailfrom.
          if (sender) transaction.state.badmailfrom = await match(sender.address, sender.domain);
          return answer.continue();
        },
        rcpt({ transaction }) {
          return transaction.state.badmailfrom ? REFUSAL : answer.continue();
        },
      },
    };
  },
});
