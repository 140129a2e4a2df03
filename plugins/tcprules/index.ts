/**
 * tcprules: tcpserver's access rules (tcp.smtp) in front of the SMTP session.
 *
 * `deny` closes the connection without a byte, as tcpserver does. `allow`
 * puts the rule's variables into the connection state: RELAYCLIENT (the
 * client may relay), RBLSMTPD (for the rblsmtpd plugin) and every other
 * variable in `state.env`. The file is read again when it changes; a change
 * that does not parse is logged and the previous rules stay, as with a
 * tcprules compile error. Also limits concurrent connections per IP.
 */
import { z } from 'zod';
import { answer, definePlugin, normalizeIp, WatchedFile } from '../../core/index.js';
import { findRule, parseRules, type Rule } from './rules.js';

const options = z.strictObject({
  /** The rules in text form (tcp.smtp), not the compiled cdb. */
  file: z.string().min(1),
  /** Concurrent connections from one IP address; 0 for no limit. */
  maxConnectionsPerIp: z.number().int().nonnegative().default(50),
  /** Seconds between checks of the file for changes. */
  checkInterval: z.number().positive().default(1),
});

export default definePlugin({
  name: 'tcprules',
  options,
  async setup({ options, log, resolvePath }) {
    const rules = await WatchedFile.open(resolvePath(options.file), parseRules, { log, checkInterval: options.checkInterval });
    const perIp = new Map<string, number>();
    log.debug({ file: rules.path }, 'rules loaded');

    return {
      hooks: {
        async connect({ connection }) {
          const ip = normalizeIp(connection.remoteIp);
          const rule: Rule | undefined = findRule(await rules.get(), ip, connection.remoteHost);
          if (rule?.action === 'deny') {
            return answer.disconnect(`denied by rule "${rule.address}:deny" (line ${rule.line})`, '4.7.1', { silent: true });
          }
          if (options.maxConnectionsPerIp > 0) {
            const count = (perIp.get(ip) ?? 0) + 1;
            if (count > options.maxConnectionsPerIp) {
              return answer.disconnect(`Too many connections from ${ip}, try again later`, '4.7.0');
            }
            perIp.set(ip, count);
            connection.onClose(() => {
              const left = (perIp.get(ip) ?? 1) - 1;
              if (left > 0) perIp.set(ip, left);
              else perIp.delete(ip);
            });
          }
          if (rule) {
            const { state } = connection;
            Object.assign(state.env, rule.vars);
            if (rule.vars.RELAYCLIENT !== undefined) state.relayClient = rule.vars.RELAYCLIENT;
            if (rule.vars.RBLSMTPD !== undefined) state.rblsmtpd = rule.vars.RBLSMTPD;
          }
          return answer.continue();
        },
      },
    };
  },
});
