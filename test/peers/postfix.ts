/**
 * A real Postfix receiving on loopback, for the outbound tests: a private
 * instance (its own config, queue and log directories, `postfix -c DIR
 * start`, as the benches run it) that takes mail for the given domains and
 * discards it, logging each connection and delivery to its own maillog.
 * Needs root (master starts as root) and Debian's postfix package.
 */
import { readFileSync } from 'node:fs';
import { POSTFIX_BASE_CF, postfixLogProblems, startPostfixInstance } from '../../bench/smtp-accept/servers.js';
import { freePort } from './net.js';

export interface PostfixReceiver {
  readonly port: number;
  /** Its maillog, whole. */
  log(): string;
  /** Lines of the maillog matching the pattern. */
  lines(pattern: RegExp): string[];
  problems(): string[];
  stop(): Promise<void>;
}

export async function startPostfixReceiver(dir: string, domains: readonly string[]): Promise<PostfixReceiver> {
  const port = await freePort();
  const main = `${POSTFIX_BASE_CF(dir)}# Takes mail for the test's domains and discards it.
mydestination = ${domains.join(', ')}
local_transport = discard:
local_recipient_maps =
default_transport = discard
`;
  const pf = await startPostfixInstance(dir, port, main);
  const log = () => {
    try {
      return readFileSync(pf.maillog, 'utf8');
    } catch {
      return '';
    }
  };
  return {
    port,
    log,
    lines: (pattern) => log().split('\n').filter((l) => pattern.test(l)),
    problems: () => postfixLogProblems(pf.maillog),
    stop: pf.stop,
  };
}
