/**
 * unbound for tests: a validating resolver on a free loopback port serving
 * the test's zones itself (auth-zone, answered as if fetched from upstream
 * so the validator checks them). A zone signed with ldns-keygen and
 * ldns-signzone gets its DS record as the trust anchor, so its answers come
 * back with the AD bit; an unsigned zone, under no anchor, is insecure.
 * Nothing leaves loopback: no root hints are used, as every name asked is
 * in a zone served here.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Test } from 'tap';
import { freePort, run } from '../helpers.js';
import { startDaemon } from './daemon.js';

export interface Zone {
  /** The origin, e.g. `dane.test`. */
  readonly name: string;
  /** Zone-file lines relative to the origin, SOA and NS added. */
  readonly records: readonly string[];
  /** Signed, with its DS as a trust anchor: answers are secure. */
  readonly signed?: boolean;
  /** Signed, but the anchor is another key's: answers are bogus (SERVFAIL). */
  readonly bogus?: boolean;
}

export interface Unbound {
  /** `127.0.0.1:PORT`, for dns.servers and delivery.dane.resolver. */
  readonly address: string;
  readonly port: number;
}

async function tool(cmd: string, args: string[], cwd: string): Promise<string> {
  const r = await run(cmd, args, { cwd });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** Writes the zone file (signed when asked) and returns its path and the trust anchor to configure, if any. */
async function writeZone(dir: string, zone: Zone): Promise<{ file: string; anchor?: string }> {
  const origin = `${zone.name}.`;
  const file = path.join(dir, `${zone.name}.zone`);
  writeFileSync(file, [`$ORIGIN ${origin}`, '$TTL 300', `@ IN SOA ns.${origin} hostmaster.${origin} 1 3600 600 86400 300`, `@ IN NS ns.${origin}`, 'ns IN A 127.0.0.1', ...zone.records, ''].join('\n'));
  if (!zone.signed && !zone.bogus) return { file };
  const key = await tool('ldns-keygen', ['-a', 'ECDSAP256SHA256', '-k', zone.name], dir);
  await tool('ldns-signzone', [file, key], dir);
  let ds = readFileSync(path.join(dir, `${key}.ds`), 'utf8').trim();
  if (zone.bogus) {
    // A key nobody signed with: the zone's real signatures do not chain to it.
    const other = await tool('ldns-keygen', ['-a', 'ECDSAP256SHA256', '-k', zone.name], dir);
    ds = readFileSync(path.join(dir, `${other}.ds`), 'utf8').trim();
  }
  return { file: `${file}.signed`, anchor: ds };
}

/** Starts unbound serving these zones; stopped by PID when `t` ends. */
export async function startUnbound(t: Test, dir: string, zones: readonly Zone[]): Promise<Unbound> {
  const written = [];
  for (const z of zones) written.push({ zone: z, ...(await writeZone(dir, z)) });
  const port = await freePort();
  const conf = path.join(dir, 'unbound.conf');
  const lines = [
    'server:',
    '  interface: 127.0.0.1',
    `  port: ${port}`,
    '  username: ""',
    '  chroot: ""',
    `  directory: "${dir}"`,
    `  pidfile: "${path.join(dir, 'unbound.pid')}"`,
    '  use-syslog: no',
    '  logfile: ""',
    '  do-daemonize: no',
    '  module-config: "validator iterator"',
    '  access-control: 127.0.0.0/8 allow',
    '  val-log-level: 2',
    '  verbosity: 1',
    // .test is a special-use name unbound answers NXDOMAIN for by default (RFC 6761).
    '  local-zone: "test." nodefault',
    ...written.flatMap((w) => (w.anchor ? [`  trust-anchor: "${w.anchor.replace(/\s+/g, ' ')}"`] : [])),
    ...written.flatMap((w) => ['auth-zone:', `  name: "${w.zone.name}."`, `  zonefile: "${w.file}"`, '  for-upstream: yes', '  for-downstream: no', '  fallback-enabled: no']),
  ];
  writeFileSync(conf, lines.join('\n') + '\n');
  await startDaemon(t, 'unbound', ['-d', '-c', conf], 'start of service');
  return { address: `127.0.0.1:${port}`, port };
}
