/**
 * bench/crash: does yubin keep its promise — nothing answered 250 is ever
 * lost — when the process is killed with SIGKILL at random moments while it
 * takes and delivers mail?
 *
 * One run: a fresh directory with a config (one SMTP listener on port 0,
 * local domain crash.test, maildir delivery); `yubin serve`; N clients
 * sending messages with unique tokens to user0..user9@crash.test without
 * pause; every 50–400 ms (seeded) `kill -9` of the server and a restart
 * (on a new port, which the clients follow). After the last kill the
 * server is started once more, the load runs on for a moment and stops,
 * and the run waits for the queue to empty. Then every Maildir is read:
 * each acknowledged message must be there for each of its recipients.
 *
 * `runCrash(options)` is the whole run; run.ts is its command line and
 * test/crash.test.ts its small-scale test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../common.js';
import { DOMAIN, Load, prng, sleep, type LoadCounts, type MessageStatus, type PortSource } from './client.js';
import { analyseRedeliveries, type RedeliveryReport } from './logs.js';
import { describeQueued, queuedIds, scanMaildirs, type ScanResult, type StuckMessage } from './scan.js';
import { emptyLogCounts, ServerProcess, type LogCounts } from './server.js';

export interface CrashOptions {
  /** Stops to make (default 50). */
  readonly kills?: number;
  /**
   * How each stop is made: SIGKILL (the default: a crash) or SIGTERM (a clean
   * restart, after which nothing may be delivered twice; no stops in start-up).
   */
  readonly signal?: 'SIGKILL' | 'SIGTERM';
  /** Concurrent SMTP clients (default 8). */
  readonly clients?: number;
  /** Seed of the PRNG behind kill times, recipients and bodies (default: from the clock; reported). */
  readonly seed?: number;
  /** Time from a server's `ready` to its kill, drawn uniformly from [min, max] ms (default 50–400). */
  readonly minDelayMs?: number;
  readonly maxDelayMs?: number;
  /** Share of kills made during start-up: at a random moment between spawn and the usual time to `ready` (default 0.1). */
  readonly earlyKillRatio?: number;
  /** After the final start, keep the load running this long before stopping it (default 1500 ms). */
  readonly tailMs?: number;
  /** Pause between one client's messages (default 0: as fast as the server answers). */
  readonly thinkMs?: number;
  /** Recipients per message, 1 to this many (default 3, at most the rig's 10 users). */
  readonly maxRecipients?: number;
  /** Give up waiting for the queue to empty after this long (default 600 s). */
  readonly settleTimeoutMs?: number;
  /** Run directory (kept: the caller owns it). Default: a new one under os.tmpdir(), removed unless `keep` or a failure. */
  readonly dir?: string;
  readonly keep?: boolean;
  /** yubin's CLI (default: this checkout's dist/core/cli.js). */
  readonly cli?: string;
  /** Progress lines. */
  readonly log?: (line: string) => void;
  /** Every child process started, as it starts (a test registers them for teardown). */
  readonly onChild?: (child: ChildProcess) => void;
  /** The config's `workers` (default 1). With more, a kill hits the primary; its workers exit when it is gone. */
  readonly workers?: number;
}

export interface KillRecord {
  /** 1-based. */
  readonly n: number;
  /** Milliseconds since the run started. */
  readonly atMs: number;
  /** Wall clock, ISO 8601 (to match the server's log lines). */
  readonly time: string;
  /** Killed before the server logged `ready`. */
  readonly early: boolean;
  /** Milliseconds since that server's spawn. */
  readonly uptimeMs: number;
  /** Client messages between MAIL and their final reply at the moment of the kill. */
  readonly inFlight: number;
  /** Of those, messages whose dot was written and whose reply had not come. */
  readonly awaitingReply: number;
  /** Committed messages in the spool right after the kill (to be recovered). */
  readonly queued: number;
  readonly acknowledgedSoFar: number;
}

export interface CrashResult {
  readonly ok: boolean;
  readonly seed: number;
  readonly options: { signal: 'SIGKILL' | 'SIGTERM'; kills: number; clients: number; minDelayMs: number; maxDelayMs: number; earlyKillRatio: number; tailMs: number; thinkMs: number };
  readonly dir: string;
  readonly kept: boolean;
  readonly kills: number;
  readonly killLog: KillRecord[];
  /** Kills with at least one client message in flight. */
  readonly killsInFlight: number;
  /** Kills with a dot written and its reply not yet read. */
  readonly killsAwaitingReply: number;
  /** Kills that left committed messages in the spool. */
  readonly killsWithQueue: number;
  readonly serverStarts: number;
  /** Mean milliseconds from spawn to `ready` over the starts that got there. */
  readonly meanStartMs: number;
  /** Messages by what the client saw. */
  readonly messages: Record<MessageStatus, number> & { total: number };
  readonly recipientsExpected: number;
  readonly recipientsDelivered: number;
  readonly deliveredFiles: number;
  readonly duplicates: number;
  readonly duplicatePairs: number;
  readonly lost: number;
  readonly unacknowledgedDelivered: number;
  readonly abortedDelivered: number;
  readonly corrupt: number;
  readonly misdelivered: number;
  readonly foreign: number;
  /** Redeliveries in the servers' logs, and whether each is of the allowed kind (first delivery by a process killed before it recorded it). */
  readonly redeliveries: RedeliveryReport;
  readonly maildirTmpFiles: number;
  /** Files left in queue/tmp after the final clean stop. */
  readonly queueTmpFiles: number;
  /** Messages still in the queue at the end (settle timed out). */
  readonly leftInQueue: number;
  /** Messages that sat in the queue with no progress during the settle phase, and what became of them. */
  readonly stuck: StuckMessage[];
  /** `yubin queue flush` runs and extra clean restarts the settle phase needed to empty the queue. */
  readonly flushes: number;
  readonly extraRestarts: number;
  readonly settleMs: number;
  readonly elapsedMs: number;
  readonly load: LoadCounts;
  readonly serverLog: LogCounts;
  /** Examples of every problem found. */
  readonly problems: string[];
  readonly lostRecipients: ScanResult['lostRecipients'];
}


export const CONFIG = `hostname: mx.${DOMAIN}
dataDir: ./var
localDomains: [${DOMAIN}]
logLevel: info
delivery: { plugins: [maildir] }
listeners:
  - { name: smtp, protocol: smtp, listen: "127.0.0.1:0", plugins: [rcpthosts] }
`;

const START_TIMEOUT_MS = 20_000;
const STALL_MS = 5_000;

/** The server of the moment, and the port the clients should use. */
class Rig implements PortSource {
  current: ServerProcess | undefined;
  readonly servers: ServerProcess[] = [];
  starts = 0;
  readonly startTimes: number[] = [];
  readonly counts = emptyLogCounts();
  private stopped = false;
  private waiters = new Set<() => void>();

  constructor(
    private readonly cli: string,
    private readonly config: string,
    private readonly logDir: string,
    private readonly onChild: ((child: ChildProcess) => void) | undefined,
  ) {}

  spawn(): ServerProcess {
    const server = new ServerProcess({ cli: this.cli, config: this.config, logDir: this.logDir, n: ++this.starts, counts: this.counts, onChild: this.onChild });
    this.current = server;
    this.servers.push(server);
    // Clients waiting for a port hear of it as soon as the listener is bound.
    server.waitListening(START_TIMEOUT_MS).then(
      () => this.wake(),
      () => undefined,
    );
    server.waitReady(START_TIMEOUT_MS).then(
      () => server.readyAt !== undefined && this.startTimes.push(server.readyAt - server.spawnedAt),
      () => undefined,
    );
    return server;
  }

  async port(): Promise<number | undefined> {
    for (;;) {
      if (this.stopped) return undefined;
      const s = this.current;
      if (s?.alive && s.port !== undefined) return s.port;
      await new Promise<void>((resolve) => {
        const w = () => {
          this.waiters.delete(w);
          clearTimeout(timer);
          resolve();
        };
        // Polls as well: a server that died is noticed here without a wake-up.
        const timer = setTimeout(w, 50);
        this.waiters.add(w);
      });
    }
  }

  stopLoad(): void {
    this.stopped = true;
    this.wake();
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** `yubin ARGS` to completion (killed by its PID after timeoutMs). */
function runCli(cli: string, args: string[], onChild: ((child: ChildProcess) => void) | undefined, timeoutMs = 30_000): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'ignore'] });
    onChild?.(child);
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', () => undefined);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout });
    });
  });
}

export async function runCrash(options: CrashOptions = {}): Promise<CrashResult> {
  const signal = options.signal ?? 'SIGKILL';
  const opts = {
    signal,
    kills: options.kills ?? 50,
    clients: options.clients ?? 8,
    minDelayMs: options.minDelayMs ?? 50,
    maxDelayMs: options.maxDelayMs ?? 400,
    earlyKillRatio: signal === 'SIGTERM' ? 0 : (options.earlyKillRatio ?? 0.1),
    tailMs: options.tailMs ?? 1500,
    thinkMs: options.thinkMs ?? 0,
    maxRecipients: options.maxRecipients ?? 3,
  };
  if (!(opts.kills >= 1 && opts.clients >= 1 && opts.minDelayMs >= 0 && opts.maxDelayMs >= opts.minDelayMs)) throw new Error('bad options: need kills >= 1, clients >= 1, 0 <= minDelayMs <= maxDelayMs');
  const seed = (options.seed ?? Date.now() % 2 ** 31) >>> 0;
  const log = options.log ?? (() => undefined);
  const settleTimeoutMs = options.settleTimeoutMs ?? 600_000;
  const cli = options.cli ?? path.join(repoRoot(), 'dist/core/cli.js');
  if (!existsSync(cli)) throw new Error(`${cli} not found: build first (npx tsc -p .)`);
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'yubin-crash-')));
  const config = path.join(dir, 'yubin.yaml');
  const dataDir = path.join(dir, 'var');
  const logDir = path.join(dir, 'logs');
  await mkdir(logDir, { recursive: true });
  await writeFile(config, (options.workers ?? 1) > 1 ? `workers: ${options.workers}\n${CONFIG}` : CONFIG);

  const started = performance.now();
  const rand = prng(seed);
  const rig = new Rig(cli, config, logDir, options.onChild);
  const load = new Load(rig, { clients: opts.clients, seed, replyTimeoutMs: 15_000, thinkMs: opts.thinkMs, maxRecipients: opts.maxRecipients });
  const killLog: KillRecord[] = [];
  const stuck: StuckMessage[] = [];
  let flushes = 0;
  let extraRestarts = 0;
  let settleMs = 0;
  let leftInQueue = 0;
  let result: CrashResult | undefined;
  let loadStopped = false;
  try {
    let server = rig.spawn();
    await server.waitReady(START_TIMEOUT_MS);
    log(`server up on 127.0.0.1:${server.port} (pid ${server.pid}); ${opts.clients} clients, ${opts.kills} kills, seed ${seed}`);
    load.start();
    let early = false;
    for (let n = 1; n <= opts.kills; n++) {
      if (early) {
        // Somewhere in start-up: module loading, spool clean-up, listeners, queue recovery.
        const typical = rig.startTimes.length ? rig.startTimes.reduce((a, b) => a + b, 0) / rig.startTimes.length : 400;
        await sleep(rand() * typical * 1.1);
        if (!server.alive) await server.waitReady(0); // ended on its own: throws with the reason
      } else {
        await server.waitReady(START_TIMEOUT_MS);
        await sleep(opts.minDelayMs + rand() * (opts.maxDelayMs - opts.minDelayMs));
      }
      if (!server.alive) throw new Error(`yubin serve (pid ${server.pid}) ended on its own (${server.exitSignal ?? `code ${server.exitCode}`})${server.lastError ? `: ${server.lastError}` : ''}`);
      const wasEarly = server.readyAt === undefined;
      const inFlight = load.inFlight;
      const awaitingReply = load.awaitingReply;
      const uptimeMs = Math.round(performance.now() - server.spawnedAt);
      if (signal === 'SIGTERM') await server.stop(60_000);
      else await server.kill9();
      const queued = (await queuedIds(dataDir)).length;
      const rec: KillRecord = { n, atMs: Math.round(performance.now() - started), time: new Date(server.endedAt ?? Date.now()).toISOString(), early: wasEarly, uptimeMs, inFlight, awaitingReply, queued, acknowledgedSoFar: load.acknowledged };
      killLog.push(rec);
      log(`${signal === 'SIGTERM' ? 'stop' : 'kill'} ${n}/${opts.kills}: pid ${server.pid} after ${uptimeMs} ms${wasEarly ? ' (before ready)' : ''}; in flight ${inFlight} (${awaitingReply} awaiting 250), queued ${queued}, acknowledged so far ${load.acknowledged}`);
      early = rand() < opts.earlyKillRatio;
      server = rig.spawn();
    }

    // The last start: the load runs on for a moment (a start under load is a case of its own), then stops.
    await server.waitReady(START_TIMEOUT_MS);
    log(`final start on 127.0.0.1:${server.port} (pid ${server.pid}); load for ${opts.tailMs} ms more, then stopping it`);
    await sleep(opts.tailMs);
    rig.stopLoad();
    await load.stop(20_000);
    loadStopped = true;

    // Settle: wait for the queue to empty. A queue that stops moving is looked at, flushed, and at worst the server restarted.
    const settleStart = performance.now();
    let last = -1;
    let lastChange = performance.now();
    let stage = 0; // 0 waiting, 1 flushed, 2 restarted
    for (;;) {
      if (!server.alive) throw new Error(`yubin serve (pid ${server.pid}) ended on its own while the queue drained${server.lastError ? `: ${server.lastError}` : ''}`);
      const ids = await queuedIds(dataDir);
      if (ids.length === 0) {
        const stat = await runCli(cli, ['queue', 'stat', '-c', config], options.onChild);
        const m = /messages in queue: (\d+)/.exec(stat.stdout);
        if (m && m[1] === '0') break;
      }
      if (ids.length !== last) {
        last = ids.length;
        lastChange = performance.now();
      } else if (performance.now() - lastChange > STALL_MS) {
        const described = await describeQueued(dataDir, ids);
        if (stage === 0) {
          stuck.push(...described);
          log(`queue stalled at ${ids.length} messages (${described.filter((d) => d.neverTried).length} never tried): yubin queue flush`);
          await runCli(cli, ['queue', 'flush', '-c', config], options.onChild);
          flushes++;
          stage = 1;
        } else if (extraRestarts < 2) {
          log(`queue still stalled at ${ids.length} messages after a flush: restarting the server (SIGTERM, start)`);
          await server.stop(10_000);
          server = rig.spawn();
          await server.waitReady(START_TIMEOUT_MS);
          extraRestarts++;
          stage = 2;
        } else {
          leftInQueue = ids.length;
          break;
        }
        lastChange = performance.now();
      }
      if (performance.now() - settleStart > settleTimeoutMs) {
        leftInQueue = ids.length;
        stuck.push(...(await describeQueued(dataDir, ids)).slice(0, 100));
        log(`queue did not empty within ${settleTimeoutMs} ms: ${ids.length} messages left`);
        break;
      }
      await sleep(250);
    }
    settleMs = Math.round(performance.now() - settleStart);
    // Deliveries settle: a clean stop waits for any still in progress.
    await server.stop(15_000);
    const queueTmpFiles = (await readdirSafe(path.join(dataDir, 'queue', 'tmp'))).length;

    const scan = await scanMaildirs(dataDir, load.messages);
    const redeliveries = await analyseRedeliveries(
      logDir,
      rig.servers.map((s) => ({ n: s.n, endedAt: s.endedAt ?? Date.now(), killed: s.exitSignal === 'SIGKILL' })),
    );
    const messages = { total: 0, acknowledged: 0, unacknowledged: 0, aborted: 0, rejected: 0 };
    for (const m of load.messages.values()) {
      messages.total++;
      messages[m.status]++;
    }
    const problems = [...scan.problems, ...redeliveries.examples];
    for (const m of load.messages.values()) {
      // A clean stop tells clients arriving meanwhile to come back (421 4.3.2): that is no problem.
      const expected = signal === 'SIGTERM' && /^421 4\.3\.2 /.test(m.reply ?? '');
      if (m.status === 'rejected' && !expected && problems.length < 40) problems.push(`rejected: ${m.token}: ${m.reply ?? ''}`);
    }
    const ok =
      scan.lost === 0 &&
      scan.corrupt === 0 &&
      scan.misdelivered === 0 &&
      scan.abortedDelivered === 0 &&
      leftInQueue === 0 &&
      redeliveries.sameProcess === 0 &&
      redeliveries.afterCleanStop === 0;
    const kept = !ownDir || options.keep === true || !ok;
    result = {
      ok,
      seed,
      options: opts,
      dir,
      kept,
      kills: killLog.length,
      killLog,
      killsInFlight: killLog.filter((k) => k.inFlight > 0).length,
      killsAwaitingReply: killLog.filter((k) => k.awaitingReply > 0).length,
      killsWithQueue: killLog.filter((k) => k.queued > 0).length,
      serverStarts: rig.starts,
      meanStartMs: rig.startTimes.length ? Math.round(rig.startTimes.reduce((a, b) => a + b, 0) / rig.startTimes.length) : 0,
      messages,
      recipientsExpected: scan.recipientsExpected,
      recipientsDelivered: scan.recipientsDelivered,
      deliveredFiles: scan.deliveredFiles,
      duplicates: scan.duplicates,
      duplicatePairs: scan.duplicatePairs,
      lost: scan.lost,
      unacknowledgedDelivered: scan.unacknowledgedDelivered,
      abortedDelivered: scan.abortedDelivered,
      corrupt: scan.corrupt,
      misdelivered: scan.misdelivered,
      foreign: scan.foreign,
      redeliveries,
      maildirTmpFiles: scan.maildirTmpFiles,
      queueTmpFiles,
      leftInQueue,
      stuck,
      flushes,
      extraRestarts,
      settleMs,
      elapsedMs: Math.round(performance.now() - started),
      load: load.counts,
      serverLog: rig.counts,
      problems,
      lostRecipients: scan.lostRecipients,
    };
    return result;
  } catch (err) {
    throw new Error(`${(err as Error).message} (run directory kept: ${dir})`);
  } finally {
    // Whatever happened: no client and no server outlives the run.
    if (!loadStopped) {
      rig.stopLoad();
      await load.stop(2_000).catch(() => undefined);
    }
    if (rig.current?.alive) await rig.current.kill9();
    // A run that threw keeps its directory (result undefined): the logs say why.
    if (ownDir && result && !result.kept) await rm(dir, { recursive: true, force: true });
  }
}

function readdirSafe(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}

/** The summary an operator reads. */
export function formatSummary(r: CrashResult): string {
  const pct = (a: number, b: number) => (b ? ` (${((100 * a) / b).toFixed(1)} %)` : '');
  const lines = [
    `crash run (${r.options.signal}), seed ${r.seed}: ${r.kills} ${r.options.signal === 'SIGTERM' ? 'clean restarts' : 'kills'} (${r.killLog.filter((k) => k.early).length} during start-up), ${r.options.clients} clients, ${(r.elapsedMs / 1000).toFixed(1)} s`,
    `  kills with messages in flight     ${r.killsInFlight}/${r.kills} (${r.killsAwaitingReply} with a 250 outstanding, ${r.killsWithQueue} with mail queued)`,
    `  server starts                     ${r.serverStarts} (mean ${r.meanStartMs} ms to ready)`,
    `  messages sent                     ${r.messages.total}: acknowledged ${r.messages.acknowledged}, unacknowledged ${r.messages.unacknowledged}, aborted before the dot ${r.messages.aborted}, rejected ${r.messages.rejected}`,
    `  recipients expected               ${r.recipientsExpected}`,
    `  delivered                         ${r.recipientsDelivered}${pct(r.recipientsDelivered, r.recipientsExpected)}, ${r.deliveredFiles} files`,
    `  duplicates                        ${r.duplicates} extra copies (${r.duplicatePairs} recipients)`,
    `  LOST                              ${r.lost}`,
    `  unacknowledged but delivered      ${r.unacknowledgedDelivered}/${r.messages.unacknowledged}`,
    `  aborted but delivered (must be 0) ${r.abortedDelivered}`,
    `  corrupt / misdelivered / foreign  ${r.corrupt} / ${r.misdelivered} / ${r.foreign}`,
    `  redeliveries in the server log    ${r.redeliveries.redeliveredPairs}: all by a killed process ${r.redeliveries.sameProcess + r.redeliveries.afterCleanStop === 0 ? 'yes' : `NO (${r.redeliveries.sameProcess} by the same process, ${r.redeliveries.afterCleanStop} after a clean stop)`}, at most ${r.redeliveries.maxGapToKillMs} ms before the kill`,
    `  Maildir tmp files left            ${r.maildirTmpFiles}; queue tmp files left ${r.queueTmpFiles}`,
    `  settle                            ${(r.settleMs / 1000).toFixed(1)} s, ${r.flushes} flushes, ${r.extraRestarts} extra restarts, ${r.stuck.length} stalled messages, ${r.leftInQueue} left in queue`,
    `  server log                        ${r.serverLog.deliverySuccess} deliveries, ${r.serverLog.deliveryDeferral} deferrals, ${r.serverLog.deliveryFailure} failures, ${r.serverLog.bounces} bounces, ${r.serverLog.warnings} warnings, ${r.serverLog.errors} errors`,
    `  clients                           ${r.load.connections} connections, ${r.load.connectFailures} refused, ${r.load.replyTimeouts} reply timeouts`,
    `  elapsed                           ${(r.elapsedMs / 1000).toFixed(1)} s`,
  ];
  if (r.problems.length) lines.push('  problems:', ...r.problems.slice(0, 20).map((p) => `    ${p}`));
  if (r.serverLog.samples.length) lines.push('  server warnings/errors (first ones):', ...r.serverLog.samples.slice(0, 10).map((s) => `    ${s}`));
  lines.push(
    r.ok
      ? 'OK: nothing acknowledged was lost'
      : `FAIL: ${r.lost} lost, ${r.corrupt} corrupt, ${r.misdelivered} misdelivered, ${r.abortedDelivered} aborted-but-delivered, ${r.leftInQueue} left in queue, ${r.redeliveries.sameProcess + r.redeliveries.afterCleanStop} redeliveries not explained by a kill`,
  );
  if (r.kept) lines.push(`run directory kept: ${r.dir}`);
  return lines.join('\n');
}
