/**
 * Idle connections: what each costs a running yubin, and whether real mail
 * still moves among them. Starts `yubin serve` (one SMTP listener, limits
 * raised so 10,000 clients may wait, an http listener for /metrics), opens N
 * connections that read the greeting and then say nothing, and measures the
 * server's RSS (VmRSS) and V8 heap in use (from its own /metrics) before and
 * after, per connection. Then, with all of them still open, times complete
 * transactions (connect, EHLO, MAIL, RCPT, DATA, QUIT) one after another:
 * p50, p99, max.
 *
 *   npm run bench:idle                       # 10,000 idle, 500 transactions
 *   node dist/bench/idle/run.js --idle 2000 --transactions 100
 *
 * Loopback only. Results: bench/results/idle-DATE.json.
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { gitInfo, machineInfo, positive, repoRoot, runBench, table } from '../common.js';
import { freePort, probeGreeting, sleep, stopChild } from '../smtp-accept/proc.js';

const HELP = `usage: node dist/bench/idle/run.js [options]   (or: npm run bench:idle -- [options])

  --idle N           idle connections to hold open (10000)
  --transactions N   transactions timed while they are open (500)
  --gc               a full garbage collection in the server before each
                     measurement (a heap snapshot, by signal, then deleted),
                     so that memory held is counted, not garbage not yet collected
  --settle S         wait S seconds after opening the connections before measuring (0)
  --cli PATH         the yubin cli.js to run (dist/core/cli.js of this checkout),
                     e.g. an older build to compare with
  --out FILE         where to write the JSON result (bench/results/idle-DATE.json)
  --keep             keep the server's temporary directory
  -h, --help
`;

function cliOptions() {
  try {
    return parseArgs({
      options: {
        idle: { type: 'string' },
        transactions: { type: 'string' },
        gc: { type: 'boolean', default: false },
        settle: { type: 'string' },
        cli: { type: 'string' },
        out: { type: 'string' },
        keep: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }).values;
  } catch (err) {
    process.stderr.write(`bench:idle: ${(err as Error).message.split('\n')[0]} (see --help)\n`);
    process.exit(2);
  }
}

const values = cliOptions();
if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}
const IDLE = positive(values.idle, '--idle', 10_000);
const TRANSACTIONS = positive(values.transactions, '--transactions', 500);
const SETTLE = values.settle === undefined ? 0 : positive(values.settle, '--settle', 0);
const root = repoRoot();

function vmRssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** yubin_nodejs_heap_size_used_bytes from the server's /metrics. */
async function heapUsed(port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = /^yubin_nodejs_heap_size_used_bytes (\d+(?:\.\d+)?(?:e\+\d+)?)$/m.exec(text);
  return m ? Number(m[1]) : NaN;
}

/**
 * The server at rest: the lowest of a few samples a second apart, so a
 * garbage collection pending at one moment does not count as memory held.
 */
async function settled(pid: number, httpPort: number, dir: string): Promise<{ rssKb: number; heapBytes: number }> {
  if (values.gc) await fullGc(pid, httpPort, dir);
  let rssKb = Infinity;
  let heapBytes = Infinity;
  for (let i = 0; i < 5; i++) {
    await sleep(1000);
    rssKb = Math.min(rssKb, vmRssKb(pid));
    heapBytes = Math.min(heapBytes, await heapUsed(httpPort));
  }
  return { rssKb, heapBytes };
}

/**
 * A full collection in the server: V8 collects before it writes a heap
 * snapshot (--heapsnapshot-signal). The server answers /metrics again once
 * the snapshot is written; the file is deleted.
 */
async function fullGc(pid: number, httpPort: number, dir: string): Promise<void> {
  process.kill(pid, 'SIGUSR2');
  await sleep(200);
  await heapUsed(httpPort);
  for (const f of readdirSync(dir)) if (f.endsWith('.heapsnapshot')) rmSync(path.join(dir, f), { force: true });
}

/** One client that reads the greeting and then waits. */
function idleClient(port: number, localAddress: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port, localAddress });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('no greeting within 30 s'));
    }, 30_000);
    sock.once('data', (d) => {
      clearTimeout(timer);
      if (!d.toString().startsWith('220')) return reject(new Error(`greeting: ${d.toString().trim()}`));
      resolve(sock);
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** A whole SMTP transaction on a new connection; resolves with its duration in ms. */
function transaction(port: number, n: number): Promise<number> {
  const script = ['EHLO client.bench.test', 'MAIL FROM:<bench@client.bench.test>', 'RCPT TO:<postmaster@localhost>', 'DATA', `Subject: idle bench ${n}\r\n\r\nhello\r\n.`, 'QUIT'];
  const start = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    let step = -1; // -1: waiting for the greeting
    sock.setEncoding('utf8');
    sock.on('data', (s: string) => {
      buf += s;
      // A reply is complete at a line whose fourth character is a space.
      for (let nl = buf.indexOf('\r\n'); nl >= 0; nl = buf.indexOf('\r\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        if (line[3] === '-') continue;
        if (!/^[23]/.test(line)) {
          sock.destroy();
          return reject(new Error(`step ${step}: ${line}`));
        }
        step++;
        if (step < script.length) sock.write(`${script[step]}\r\n`);
        else {
          sock.end();
          resolve(Number(process.hrtime.bigint() - start) / 1e6);
        }
      }
    });
    sock.on('error', reject);
  });
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

let server: ChildProcess | undefined;
const clients: net.Socket[] = [];
const dir = mkdtempSync(path.join(os.tmpdir(), 'yubin-idle-'));

async function main(): Promise<void> {
  const [smtp, http, dns] = [await freePort(), await freePort(), await freePort()];
  writeFileSync(
    path.join(dir, 'yubin.yaml'),
    [
      'dataDir: ./var',
      'hostname: bench.test',
      'localDomains: [localhost]',
      'logLevel: warn',
      `dns: { servers: ["127.0.0.1:${dns}"], timeout: 1s, tries: 1 }`,
      'queue: { concurrencyLocal: 0, concurrencyRemote: 0 }',
      'listeners:',
      `  - name: smtp`,
      `    protocol: smtp`,
      `    listen: 127.0.0.1:${smtp}`,
      `    limits: { maxConnections: ${IDLE + 100}, maxConnectionsPerIp: 0, idleTimeout: 30m, firstCommandTimeout: 30m }`,
      '    plugins: [rcpthosts]',
      `  - { name: http, protocol: http, listen: "127.0.0.1:${http}", serve: [metrics] }`,
      '',
    ].join('\n'),
  );
  const cli = values.cli ? path.resolve(values.cli) : path.join(root, 'dist/core/cli.js');
  const nodeFlags = values.gc ? ['--heapsnapshot-signal=SIGUSR2'] : [];
  server = spawn(process.execPath, [...nodeFlags, cli, 'serve', '--config', path.join(dir, 'yubin.yaml')], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, YUBIN_LOG_FORMAT: 'json' } });
  const pid = server.pid!;
  for (let i = 0; ; i++) {
    try {
      await probeGreeting(smtp, 1000);
      break;
    } catch (err) {
      if (i > 100 || server.exitCode !== null) throw new Error(`yubin did not start: ${(err as Error).message}`);
      await sleep(100);
    }
  }
  // A few transactions first, so the code paths are compiled and the pools warm before the baseline.
  for (let i = 0; i < 50; i++) await transaction(smtp, -i);
  const before = await settled(pid, http, dir);

  const opened = process.hrtime.bigint();
  for (let i = 0; i < IDLE; i += 250) {
    // Spread over 127.0.0.2-41, so no one source address runs short of ports.
    const batch = Array.from({ length: Math.min(250, IDLE - i) }, (_, j) => idleClient(smtp, `127.0.0.${2 + ((i + j) % 40)}`));
    clients.push(...(await Promise.all(batch)));
  }
  const openSeconds = Number(process.hrtime.bigint() - opened) / 1e9;
  if (SETTLE > 0) await sleep(SETTLE * 1000);
  const after = await settled(pid, http, dir);

  const times: number[] = [];
  for (let i = 0; i < TRANSACTIONS; i++) times.push(await transaction(smtp, i));
  const stillOpen = clients.filter((c) => !c.destroyed).length;
  times.sort((a, b) => a - b);

  const perConn = { rssBytes: ((after.rssKb - before.rssKb) * 1024) / IDLE, heapBytes: (after.heapBytes - before.heapBytes) / IDLE };
  const result = {
    date: new Date().toISOString(),
    machine: machineInfo(dir),
    git: gitInfo(root),
    idle: IDLE,
    stillOpenAfterTransactions: stillOpen,
    openSeconds: round(openSeconds),
    before,
    after,
    perConnection: { rssBytes: Math.round(perConn.rssBytes), heapBytes: Math.round(perConn.heapBytes) },
    transactions: { count: TRANSACTIONS, p50Ms: round(pct(times, 50)), p99Ms: round(pct(times, 99)), maxMs: round(times.at(-1)!) },
    goals: { perConnectionBytes: 4096, p99Ms: 5 },
    cli,
    fullGcBeforeMeasuring: values.gc,
    method: 'RSS is VmRSS, heap is yubin_nodejs_heap_size_used_bytes from /metrics, each the lowest of five samples a second apart; per connection = (after - before) / idle; transactions are sequential, each on a new connection, timed from connect to the QUIT reply',
  };
  process.stdout.write(
    table([
      ['idle connections', 'RSS per conn', 'heap per conn', 'tx p50 ms', 'tx p99 ms', 'tx max ms', 'still open'],
      [String(IDLE), `${result.perConnection.rssBytes} B`, `${result.perConnection.heapBytes} B`, String(result.transactions.p50Ms), String(result.transactions.p99Ms), String(result.transactions.maxMs), String(stillOpen)],
    ]) + '\n',
  );
  process.stdout.write(`goals: ≤ 4096 B per connection (RSS ${perConn.rssBytes <= 4096 ? 'met' : 'NOT met'}, heap ${perConn.heapBytes <= 4096 ? 'met' : 'NOT met'}); p99 ≤ 5 ms (${result.transactions.p99Ms <= 5 ? 'met' : 'NOT met'})\n`);
  const out = values.out ?? path.join(root, 'bench/results', `idle-${result.date.slice(0, 10)}${IDLE === 10_000 ? '' : '-quick'}.json`);
  writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
  process.stdout.write(`written ${out}\n`);
}

await runBench('idle', main, async () => {
  for (const c of clients) c.destroy();
  if (server && server.exitCode === null) await stopChild(server, 'SIGTERM', 30_000);
  if (!values.keep) rmSync(dir, { recursive: true, force: true });
});
