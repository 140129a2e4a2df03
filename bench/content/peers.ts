/**
 * The content-filter benchmark's processes, each a child stopped by its PID:
 * spamd (as test/peers/spamd.ts starts it: -L, -m 2, loopback only, its own
 * process group so one signal reaches the preforked children), clamd (as
 * test/peers/clamd.ts: a one-signature EICAR database, loopback TCP) and
 * yubin (yubin-server.ts). test/peers/* are not imported because they pull in
 * tap (test/helpers.ts), which would start a TAP run in this process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ping } from '../../plugins/clamav/clamd.js';
import { CLOCK_TICKS_PER_SECOND, freePort, readStat, sleep, stopChild } from '../smtp-accept/proc.js';
import { tail } from '../smtp-accept/servers.js';
import type { Input as YubinInput } from './yubin-server.js';
import { writeClamdConfig } from '../../test/peers/clamd.js';
import { groupAlive, pingSpamd, spamdArgs } from '../../test/peers/spamd.js';


const here = path.dirname(fileURLToPath(import.meta.url));

export interface Peer {
  readonly pid: number;
  readonly port: number;
  readonly logFile: string;
  /** CPU seconds used so far (spamd: the whole process group, reaped children included). */
  cpuS(): number;
  stop(): Promise<void>;
}

/** Every peer started here, so a failing run still stops them all (each by its PID). */
const started = new Set<Peer>();

export async function stopAll(): Promise<void> {
  for (const p of [...started]) await p.stop().catch(() => undefined);
}

/** utime+stime (+ cutime+cstime) per PID in the process group, from /proc. */
function groupCpuTicks(pgid: number): number {
  let ticks = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // Fields from 3 (state): pgrp is 5, utime 14, stime 15, cutime 16, cstime 17.
      if (Number(f[2]) !== pgid) continue;
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {
      /* gone meanwhile */
    }
  }
  return ticks;
}


function logTo(logFile: string): number {
  return openSync(logFile, 'a');
}

/** spamd -L -m 2 on 127.0.0.1:PORT, its own process group; ready when it answers PING. */
export async function startSpamd(dir: string, children = 2): Promise<Peer & { args: string[] }> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const args = spamdArgs(dir, port, children);
  const logFile = path.join(dir, 'spamd.log');
  const fd = logTo(logFile);
  let child: ChildProcess;
  try {
    child = spawn('spamd', args, { detached: true, stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
  const pgid = child.pid!;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const killGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-pgid, signal);
    } catch {
      /* already gone */
    }
  };
  const onExit = () => killGroup('SIGKILL');
  process.on('exit', onExit);
  let stopped: Promise<void> | undefined;
  const peer = {
    pid: pgid,
    port,
    logFile,
    args,
    cpuS: () => groupCpuTicks(pgid) / CLOCK_TICKS_PER_SECOND,
    stop: () =>
      (stopped ??= (async () => {
        started.delete(peer);
        killGroup('SIGTERM');
        await Promise.race([exited, sleep(5000)]);
        const deadline = Date.now() + 5000;
        while (groupAlive(pgid) && Date.now() < deadline) await sleep(50);
        if (groupAlive(pgid)) killGroup('SIGKILL');
        await exited;
        process.off('exit', onExit);
      })()),
  };
  started.add(peer);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await peer.stop();
      throw new Error(`spamd exited (${child.exitCode ?? child.signalCode}):\n${tail(logFile)}`);
    }
    if (await pingSpamd(port, '127.0.0.1', 1000)) break;
    if (Date.now() > deadline) {
      await peer.stop();
      throw new Error(`spamd did not answer PING within 60 s:\n${tail(logFile)}`);
    }
    await sleep(200);
  }
  return peer;
}

/** clamd in the foreground on 127.0.0.1:PORT with one EICAR .ndb signature; ready when it answers PING. */
export async function startClamd(dir: string): Promise<Peer> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const conf = await writeClamdConfig(dir, port);
  const logFile = path.join(dir, 'clamd.log');
  const fd = logTo(logFile);
  let child: ChildProcess;
  try {
    child = spawn('clamd', ['-c', conf], { stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid!;
  const peer: Peer = {
    pid,
    port,
    logFile,
    cpuS: () => (readStat(pid)?.cpuTicks ?? 0) / CLOCK_TICKS_PER_SECOND,
    async stop() {
      started.delete(peer);
      await stopChild(child, 'SIGTERM', 10_000);
    },
  };
  started.add(peer);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await peer.stop();
      throw new Error(`clamd exited (${child.exitCode ?? child.signalCode}):\n${tail(logFile)}`);
    }
    if (await ping({ host: '127.0.0.1', port }, { connectTimeout: 500, timeout: 1_000 })) break;
    if (Date.now() > deadline) {
      await peer.stop();
      throw new Error(`clamd did not answer PING within 60 s:\n${tail(logFile)}`);
    }
    await sleep(100);
  }
  return peer;
}

export interface Yubin extends Peer {
  readonly dataDir: string;
}

/** yubin-server.js as a child (stdin a pipe: it exits if we die); resolves once it prints its port. */
export async function startYubin(input: YubinInput, logFile: string): Promise<Yubin> {
  mkdirSync(input.dataDir, { recursive: true });
  const fd = logTo(logFile);
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [path.join(here, 'yubin-server.js')], {
      stdio: ['pipe', 'pipe', fd],
      env: { ...process.env, YUBIN_BENCH_CONTENT: JSON.stringify(input) },
    });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid!;
  let port = 0;
  const peer: Yubin = {
    pid,
    get port() {
      return port;
    },
    logFile,
    dataDir: input.dataDir,
    cpuS: () => (readStat(pid)?.cpuTicks ?? 0) / CLOCK_TICKS_PER_SECOND,
    async stop() {
      started.delete(peer);
      await stopChild(child, 'SIGTERM', 10_000);
    },
  };
  started.add(peer);
  try {
    port = await new Promise<number>((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => reject(new Error(`yubin-server did not start within 30 s:\n${tail(logFile)}`)), 30_000);
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (s: string) => {
        buf += s;
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        clearTimeout(timer);
        resolve((JSON.parse(buf.slice(0, nl)) as { port: number }).port);
      });
      child.once('exit', (code, sig) => {
        clearTimeout(timer);
        reject(new Error(`yubin-server exited ${code ?? sig} before it was ready:\n${tail(logFile)}`));
      });
    });
  } catch (e) {
    await peer.stop();
    throw e;
  }
  return peer;
}
