/**
 * bench/crash command line: kill -9 yubin under load, again and again, then
 * check that every message it acknowledged was delivered. See crash.ts.
 *
 *   node dist/bench/crash/run.js [--kills 50] [--clients 8] [--seed N] [--keep]
 *   node dist/bench/crash/run.js --help
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from '../common.js';
import { formatSummary, runCrash, type CrashOptions } from './crash.js';

const HELP = `usage: node dist/bench/crash/run.js [options]

  --kills N            stops to make (default 50)
  --sigterm            stop with SIGTERM (clean restarts: nothing may be delivered twice)
                       instead of SIGKILL
  --clients N          concurrent SMTP clients (default 8)
  --seed N             PRNG seed for kill times, recipients and bodies (default: from the clock; printed)
  --min-delay MS       shortest time from a server's ready to its kill (default 50)
  --max-delay MS       longest (default 400)
  --early-ratio R      share of kills made during start-up, before ready (default 0.1)
  --tail MS            load kept running after the final start (default 1500)
  --think MS           mean pause between a client's messages (default 0)
  --settle-timeout SEC give up waiting for the queue to empty (default 600)
  --keep               keep the run directory (config, spool, Maildirs, server logs);
                       it is always kept when the run fails
  --out FILE           results JSON (default bench/results/crash-<date>.json)
  --quiet              no line per kill
  -h, --help

Exit status: 0 when nothing acknowledged was lost (and nothing was corrupt,
misdelivered or left in the queue), 1 otherwise, 2 on a usage error or when
the rig itself failed (e.g. the server would not start).
`;

function num(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--${name}: not a non-negative number: ${value}`);
  return n;
}

class UsageError extends Error {}

function commit(root: string): string | undefined {
  try {
    const rev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty ? `${rev}+dirty` : rev;
  } catch {
    return undefined;
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      kills: { type: 'string' },
      clients: { type: 'string' },
      seed: { type: 'string' },
      'min-delay': { type: 'string' },
      'max-delay': { type: 'string' },
      'early-ratio': { type: 'string' },
      tail: { type: 'string' },
      think: { type: 'string' },
      'settle-timeout': { type: 'string' },
      sigterm: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      out: { type: 'string' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const options: CrashOptions = {
    signal: values.sigterm ? 'SIGTERM' : 'SIGKILL',
    kills: num('kills', values.kills, 50),
    clients: num('clients', values.clients, 8),
    seed: values.seed === undefined ? undefined : num('seed', values.seed, 0),
    minDelayMs: num('min-delay', values['min-delay'], 50),
    maxDelayMs: num('max-delay', values['max-delay'], 400),
    earlyKillRatio: num('early-ratio', values['early-ratio'], 0.1),
    tailMs: num('tail', values.tail, 1500),
    thinkMs: num('think', values.think, 0),
    settleTimeoutMs: num('settle-timeout', values['settle-timeout'], 600) * 1000,
    keep: values.keep,
    log: values.quiet ? (line) => (/^(kill|stop) /.test(line) ? undefined : console.log(line)) : (line) => console.log(line),
  };
  if ((options.kills ?? 0) < 1 || (options.clients ?? 0) < 1) throw new UsageError('--kills and --clients must be at least 1');
  if ((options.earlyKillRatio ?? 0) > 1) throw new UsageError('--early-ratio must be between 0 and 1');
  if ((options.maxDelayMs ?? 0) < (options.minDelayMs ?? 0)) throw new UsageError('--max-delay must not be below --min-delay');

  const root = repoRoot();
  const result = await runCrash(options);
  console.log(formatSummary(result));
  const date = new Date().toISOString().slice(0, 10);
  const out = values.out ?? path.join(root, 'bench', 'results', `crash-${values.sigterm ? 'sigterm-' : ''}${date}.json`);
  mkdirSync(path.dirname(out), { recursive: true });
  const env = { date: new Date().toISOString(), commit: commit(root), node: process.version, platform: `${os.platform()} ${os.release()}`, cpus: os.cpus().length, tmpdir: os.tmpdir() };
  writeFileSync(out, JSON.stringify({ env, ...result }, null, 2) + '\n');
  console.log(`results: ${path.relative(process.cwd(), out) || out}`);
  return result.ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`crash: ${message.split('\n')[0]}\n`);
    process.exit(2);
  },
);
