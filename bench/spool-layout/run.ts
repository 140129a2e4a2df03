/**
 * What would a log-structured spool save? The CPU one durable commit costs
 * in yubin's spool (Spool.inject: a file per message, fdatasync, rename,
 * the shared fsync of mess/) against the least a different layout could
 * cost: one append-only file, one fdatasync shared by every commit that
 * arrived while the last was in flight (group commit), no file made per
 * message. The second is not a spool (no index, no removal, no recovery):
 * it bounds from below what such a redesign could win.
 *
 * N commits from S concurrent writers, in one process; CPU is that
 * process's user + system time, every thread included (libuv's pool does
 * the file calls). Rounds alternate the two, in a fresh directory each.
 *
 *   node dist/bench/spool-layout/run.js [--commits 5000] [--sessions 20] [--size 5500] [--rounds 2]
 */
import * as fs from 'node:fs';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { Spool } from '../../core/queue/spool.js';
import { machineInfo, positive, repoRoot, table } from '../common.js';

const USAGE = `usage: node dist/bench/spool-layout/run.js [options]

  --commits N    durable commits per run (default 5000)
  --sessions N   concurrent writers (default 20)
  --size BYTES   message size (default 5500)
  --rounds N     alternating rounds of both layouts (default 2)
  --workdir DIR  where the files go (default bench/.peers/run/spool-layout; removed after)
  -h, --help
`;

const fdatasync = promisify(fs.fdatasync);

interface Options {
  readonly commits: number;
  readonly sessions: number;
  readonly message: Buffer;
}

/** yubin's spool as it is: Spool.inject, the same path as an SMTP commit. */
async function spoolCommits(dir: string, o: Options): Promise<void> {
  const spool = new Spool(dir);
  await spool.init();
  const envelope = { sender: 'bench@client.test', senderParams: {}, recipients: [{ address: 'postmaster@localhost', params: {} }], received: Date.now(), listener: 'bench', remoteIp: '127.0.0.1', heloName: 'client.test', authUser: undefined, prependHeaders: '' };
  let next = 0;
  await Promise.all(
    Array.from({ length: o.sessions }, async () => {
      while (next++ < o.commits) await spool.inject(o.message, envelope);
    }),
  );
}

/** One append-only file, group commit: the floor of what a log-structured layout could cost. */
async function logCommits(dir: string, o: Options): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const fd = fs.openSync(path.join(dir, 'log'), 'a', 0o600);
  let waiting: Array<() => void> = [];
  let syncing = false;
  const sync = (): void => {
    if (syncing || !waiting.length) return;
    syncing = true;
    const covered = waiting;
    waiting = [];
    void fdatasync(fd).then(() => {
      syncing = false;
      for (const done of covered) done();
      sync();
    });
  };
  let next = 0;
  await Promise.all(
    Array.from({ length: o.sessions }, async () => {
      while (next++ < o.commits) {
        fs.writeSync(fd, o.message);
        await new Promise<void>((resolve) => {
          waiting.push(resolve);
          sync();
        });
      }
    }),
  );
  fs.closeSync(fd);
}

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({ options: { commits: { type: 'string' }, sessions: { type: 'string' }, size: { type: 'string' }, rounds: { type: 'string' }, workdir: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    process.stderr.write(`spool-layout: ${(err as Error).message}\n`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  let o: Options;
  let rounds: number;
  try {
    o = { commits: positive(values.commits, 'commits', 5000), sessions: positive(values.sessions, 'sessions', 20), message: Buffer.alloc(positive(values.size, 'size', 5500), 'm') };
    rounds = positive(values.rounds, 'rounds', 2);
  } catch (err) {
    process.stderr.write(`spool-layout: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const work = path.resolve(values.workdir ?? path.join(repoRoot(), 'bench/.peers/run/spool-layout'));
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const info = machineInfo(work);
  process.stdout.write(`spool-layout: ${o.commits} commits of ${o.message.length} bytes, ${o.sessions} writers, ${rounds} rounds; ${info.cpus} cpus, ${info.node}, ${info.workdirFilesystem}\n`);
  const rows = [['layout', 'round', 'commits/s', 'CPU µs per commit']];
  const layouts = [
    ['spool (file per message)', spoolCommits],
    ['append-only log, group commit', logCommits],
  ] as const;
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const [name, run] of layouts) {
        const dir = path.join(work, `${round}-${name.split(' ')[0]}`);
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        await run(dir, o);
        const seconds = (performance.now() - t0) / 1000;
        const cpu = process.cpuUsage(cpu0);
        rows.push([name, String(round), Math.round(o.commits / seconds).toLocaleString('en'), ((cpu.user + cpu.system) / o.commits).toFixed(0)]);
      }
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  process.stdout.write(table(rows) + '\n');
}

await main();
