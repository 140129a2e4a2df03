/**
 * ratelimit: messages per envelope sender, per client IP and per
 * authenticated user in a time window, counted in the configured store
 * (`store:`): memory or SQLite for one node, Redis for every node sharing
 * it, so a sender limited to 10 a minute gets 10 across the whole site.
 *
 * Where it is decided and counted:
 * - The check is at MAIL: a sender, client or user whose count has reached
 *   its limit gets `451 4.7.1 Rate limit exceeded for ..., try again later`
 *   (Postfix's and Haraka's temporary answer) before any RCPT, and the core
 *   logs that one decision line naming the plugin and the reason.
 * - A message is counted once it is accepted: at the queue hook, after every
 *   data check, once per message however many recipients it has. An
 *   attempt that is refused (a bad recipient, a virus, the limit itself)
 *   costs nothing. List ratelimit after the plugins that may still refuse a
 *   message at the queue hook.
 * - The check reads and the count writes, so transactions of one sender in
 *   progress at the moment the limit is reached may all pass: the limit can
 *   be passed by as many messages as that sender has in flight at once.
 *
 * When the store does not answer, `onStoreFailure: accept` (the default)
 * passes messages uncounted, `defer` answers 451 4.3.0; either way one line
 * is logged when it starts and one when the store answers again.
 */
import { answer, definePlugin, normalizeIp, type Connection, type Defer } from '../../core/index.js';
import { StoreOutage } from '../../core/services/store-outage.js';
import { RateCounter, type Counted, type Exceeded } from './counter.js';
import { options, type RateLimitOptions } from './options.js';

export { options } from './options.js';

declare module '../../core/hooks.js' {
  interface TransactionState {
    /** What the message is counted against once it is accepted (none: exempt, or not counted). */
    ratelimit?: readonly Counted[];
  }
}

const STORE_FAILED: Defer = answer.defer(451, '4.3.0', 'Temporary rate limit failure, try again later');

function exempt(o: RateLimitOptions, c: Connection): boolean {
  return (o.exempt.includes('authenticated') && c.authUser !== undefined) || (o.exempt.includes('relayclient') && c.state.relayClient !== undefined) || (o.exempt.includes('trusted') && c.state.trusted === true);
}

function refusal(e: Exceeded): Defer {
  const what = { sender: `sender ${e.counted.value}`, ip: `your IP address ${e.counted.value}`, user: `user ${e.counted.value}` }[e.counted.kind];
  return answer.defer(451, '4.7.1', `Rate limit exceeded for ${what} (${e.count} messages, limit ${e.counted.limit.limit} per ${Math.round(e.counted.limit.window / 1000)} s), try again later`);
}

export default definePlugin({
  name: 'ratelimit',
  options,
  setup({ options: o, services, log }) {
    const counter = new RateCounter(() => services.store);
    const outage = new StoreOutage(log, 'ratelimit', o.onStoreFailure === 'defer' ? 'deferring every message (451 4.3.0)' : 'accepting messages uncounted');
    const counts = (connection: Connection, sender: string | undefined): Counted[] => {
      const out: Counted[] = [];
      if (o.sender && sender) out.push({ kind: 'sender', value: sender.toLowerCase(), limit: o.sender });
      if (o.ip) out.push({ kind: 'ip', value: normalizeIp(connection.remoteIp), limit: o.ip });
      if (o.user && connection.authUser !== undefined) out.push({ kind: 'user', value: connection.authUser.toLowerCase(), limit: o.user });
      return out;
    };
    return {
      hooks: {
        async mail({ connection, transaction, sender, signal }) {
          if (exempt(o, connection)) return answer.continue();
          const counted = counts(connection, sender?.address);
          if (counted.length === 0) return answer.continue();
          let over: Exceeded | undefined;
          try {
            over = await counter.over(counted, { signal });
            outage.ok();
          } catch (err) {
            if (signal.aborted) throw err;
            outage.failed(err);
            return o.onStoreFailure === 'defer' ? STORE_FAILED : answer.continue();
          }
          if (over) return refusal(over);
          transaction.state.ratelimit = counted;
          return answer.continue();
        },
        async queue({ transaction, signal }) {
          const counted = transaction.state.ratelimit;
          if (!counted?.length) return answer.continue();
          try {
            await counter.add(counted, { signal });
            outage.ok();
          } catch (err) {
            if (signal.aborted) throw err;
            // The message is accepted all the same: a count lost is better than mail refused after DATA.
            outage.failed(err);
          }
          return answer.continue();
        },
      },
    };
  },
});
