/**
 * tcprules: tcpserver's access rules (tcp.smtp) in front of the SMTP session.
 *
 * `deny` closes the connection without a byte, as tcpserver does. `allow`
 * puts the rule's variables into the connection state: RELAYCLIENT (the
 * client may relay), RBLSMTPD (for the rblsmtpd plugin) and every other
 * variable in `state.env`. The file is read again when it changes; a change
 * that does not parse is logged and the previous rules stay, as with a
 * tcprules compile error. `MAXCONNIP` (the tcpserver limits patch's name)
 * sets how many connections the client's IP may hold open, in place of the
 * listener's `maxConnectionsPerIp`; the core counts and enforces it.
 */
import { z } from 'zod';
import { answer, definePlugin, normalizeIp, WatchedFile } from '../../core/index.js';
import { findRule, parseRules, type Rule } from './rules.js';

const options = z.strictObject({
  /** The rules in text form (tcp.smtp), not the compiled cdb. */
  file: z.string().min(1),
  /** MAXCONNIP for clients whose rule sets none (0: no limit); unset: the listener's maxConnectionsPerIp. */
  maxConnectionsPerIp: z.number().int().nonnegative().optional(),
  /** Seconds between checks of the file for changes. */
  checkInterval: z.number().positive().default(1),
});

export default definePlugin({
  name: 'tcprules',
  options,
  async setup({ options, log, resolvePath }) {
    const rules = await WatchedFile.open(resolvePath(options.file), parseRules, { log, checkInterval: options.checkInterval });
    log.debug({ file: rules.path }, 'rules loaded');

    return {
      hooks: {
        async connect({ connection }) {
          const ip = normalizeIp(connection.remoteIp);
          const rule: Rule | undefined = findRule(await rules.get(), ip, connection.remoteHost);
          if (rule?.action === 'deny') {
            return answer.disconnect(`denied by rule "${rule.address}:deny" (line ${rule.line})`, '4.7.1', { silent: true });
          }
          if (rule) {
            const { state } = connection;
            Object.assign(state.env, rule.vars);
            if (rule.vars.RELAYCLIENT !== undefined) state.relayClient = rule.vars.RELAYCLIENT;
            if (rule.vars.RBLSMTPD !== undefined) state.rblsmtpd = rule.vars.RBLSMTPD;
          }
          const max = maxConnIp(rule?.vars.MAXCONNIP) ?? options.maxConnectionsPerIp;
          if (max !== undefined) connection.state.maxConnectionsPerIp = max;
          return answer.continue();
        },
      },
    };
  },
});

/** MAXCONNIP="N": a count, or nothing when it is not one (the patch ignores such a value too). */
function maxConnIp(value: string | undefined): number | undefined {
  return value !== undefined && /^\d+$/.test(value.trim()) ? Number(value.trim()) : undefined;
}
