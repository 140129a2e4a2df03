/**
 * Process helpers for the benchmark: running commands, waiting for a server's
 * greeting, and reading memory and CPU figures from /proc (Linux only).
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

export interface CommandResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Wall time from spawn to exit, monotonic clock. */
  readonly ms: number;
  readonly timedOut: boolean;
}

/**
 * Runs a command to completion with output captured. On timeout the child
 * (and only it, by its PID) gets SIGTERM, then SIGKILL.
 */
export function runCommand(cmd: string, args: readonly string[], opts: SpawnOptions & { timeoutMs?: number; onSpawn?: (child: ChildProcess) => void } = {}): Promise<CommandResult> {
  const { timeoutMs, onSpawn, ...spawnOpts } = opts;
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...spawnOpts });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout?.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    let timer: NodeJS.Timeout | undefined;
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        timedOut = true;
        void stopChild(child, 'SIGTERM', 5000);
      }, timeoutMs);
    }
    child.once('error', (err) => {
      if (timer) clearTimeout(timer);
      reject(err);
    });
    child.once('spawn', () => onSpawn?.(child));
    // 'exit' is the moment the process ended; 'close' waits for its pipes too.
    let exitAt = 0;
    child.once('exit', () => (exitAt = performance.now()));
    child.once('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: (exitAt || performance.now()) - started, timedOut });
    });
  });
}

/** Runs a command and throws with its output unless it exits 0. */
export async function mustRun(cmd: string, args: readonly string[], opts: SpawnOptions & { timeoutMs?: number } = {}): Promise<CommandResult> {
  const r = await runCommand(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}\n${(r.stdout + r.stderr).trim()}`);
  }
  return r;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Waits until the process with this PID is gone; false on timeout. */
export async function waitPidGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (!pidAlive(pid)) return true;
    await sleep(50);
  }
  return !pidAlive(pid);
}

/** Signals a child we spawned (by its PID), escalating to SIGKILL after graceMs. Resolves once it has exited. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** A free TCP port on 127.0.0.1, as the kernel hands it out. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Connects to 127.0.0.1:port, reads the greeting and says QUIT. Resolves with the greeting line. */
export function probeGreeting(port: number, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    let settled = false;
    const finish = (err: Error | undefined, line?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        sock.destroy();
        reject(err);
      } else {
        resolve(line!);
      }
    };
    const timer = setTimeout(() => finish(new Error(`no greeting on 127.0.0.1:${port} within ${timeoutMs} ms`)), timeoutMs);
    sock.setEncoding('utf8');
    const onData = (s: string) => {
      buf += s;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      sock.off('data', onData);
      const line = buf.slice(0, nl).trim();
      if (!line.startsWith('220')) return finish(new Error(`greeting was ${JSON.stringify(line)}`));
      // Say QUIT and let the server close; the rest of what it sends is not read.
      sock.end('QUIT\r\n');
      sock.resume();
      setTimeout(() => sock.destroy(), 1000).unref();
      finish(undefined, line);
    };
    sock.on('data', onData);
    sock.on('error', (err) => finish(err));
  });
}

/**
 * Calls `probe` until it answers, the deadline passes, or isDead() says the
 * server has gone; `fatal` errors (a server that is up but refusing) end the
 * wait at once.
 */
export async function pollServer<T>(what: string, probe: () => Promise<T>, timeoutMs: number, isDead: () => string | undefined, fatal: (err: unknown) => boolean = () => false): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  while (performance.now() < deadline) {
    const dead = isDead();
    if (dead) throw new Error(dead);
    try {
      return await probe();
    } catch (err) {
      if (fatal(err)) throw err;
      last = err;
      await sleep(100);
    }
  }
  throw new Error(`${what} did not answer within ${timeoutMs} ms: ${last instanceof Error ? last.message : String(last)}`);
}

/** Polls probeGreeting until the server answers, the deadline passes, or isDead() says the server has gone. */
export function waitForGreeting(port: number, timeoutMs: number, isDead: () => string | undefined): Promise<string> {
  return pollServer(`server on 127.0.0.1:${port}`, () => probeGreeting(port), timeoutMs, isDead);
}

// ---------------------------------------------------------------- /proc

export interface ProcStat {
  readonly pid: number;
  readonly comm: string;
  readonly ppid: number;
  /** utime + stime, in clock ticks. */
  readonly cpuTicks: number;
  /** cutime + cstime: CPU of children that exited and were reaped, in clock ticks. */
  readonly childCpuTicks: number;
}

/** A /proc file of the process, or undefined once it is gone. */
function procFile(pid: number, name: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${name}`, 'utf8');
  } catch {
    return undefined;
  }
}

export function readStat(pid: number): ProcStat | undefined {
  const text = procFile(pid, 'stat');
  if (text === undefined) return undefined;
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  const comm = text.slice(open + 1, close);
  // Fields after the comm, numbered from 3 (state) as in proc(5).
  const f = text.slice(close + 2).split(' ');
  const field = (n: number) => Number(f[n - 3]);
  return { pid, comm, ppid: field(4), cpuTicks: field(14) + field(15), childCpuTicks: field(16) + field(17) };
}

export interface ProcMemory {
  /** Current resident set, kB. */
  readonly rssKb: number;
  /** High-water mark of the resident set over the process's life, kB. */
  readonly hwmKb: number;
}

export function readMemory(pid: number): ProcMemory | undefined {
  const text = procFile(pid, 'status');
  if (text === undefined) return undefined;
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
}

/** Proportional set size (shared pages divided among their users), kB. */
export function readPssKb(pid: number): number | undefined {
  const text = procFile(pid, 'smaps_rollup');
  return text === undefined ? undefined : Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? 0);
}

/** The PID and all its descendants, found by scanning /proc. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (!st) continue;
    const list = children.get(st.ppid);
    if (list) list.push(st.pid);
    else children.set(st.ppid, [st.pid]);
  }
  const out: number[] = [];
  const walk = (pid: number) => {
    out.push(pid);
    for (const c of children.get(pid) ?? []) walk(c);
  };
  if (pidAlive(root)) walk(root);
  return out;
}

export const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ on Linux for every architecture Node runs on

export interface MemoryPeak {
  /** Highest sum of VmRSS over the sampled processes at one instant, kB. */
  readonly peakRssSumKb: number;
  /** Highest sum of Pss at one instant (only when PSS was sampled), kB. */
  readonly peakPssSumKb: number | undefined;
  /** Largest VmHWM of any one sampled process, kB. */
  readonly maxProcessHwmKb: number;
  /** Largest VmHWM per command name (master, smtpd, cleanup, ...), kB. */
  readonly maxHwmByComm: Record<string, number>;
  /** Most processes seen at one instant. */
  readonly peakProcesses: number;
  readonly samples: number;
}

/**
 * Samples the memory of a set of processes (re-evaluated each tick, so a
 * process tree can grow and shrink) every intervalMs until stopped. PSS is
 * read only every pssEveryMs: smaps_rollup walks the page tables under the
 * target's mmap lock (about 1.5 ms for a Node process), which would disturb
 * what is measured if done at every tick.
 */
export class MemorySampler {
  private timer: NodeJS.Timeout | undefined;
  private peakRssSumKb = 0;
  private peakPssSumKb = 0;
  private maxProcessHwmKb = 0;
  private peakProcesses = 0;
  private samples = 0;
  private readonly maxHwmByComm: Record<string, number> = {};

  private lastPss = -Infinity;

  constructor(
    private readonly pids: () => number[],
    private readonly intervalMs: number,
    private readonly pssEveryMs: number | undefined,
  ) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
  }

  /** Takes a last sample (PSS included) and returns the peaks. */
  stop(): MemoryPeak {
    if (this.timer) clearInterval(this.timer);
    this.sample(true);
    return {
      peakRssSumKb: this.peakRssSumKb,
      peakPssSumKb: this.pssEveryMs !== undefined ? this.peakPssSumKb : undefined,
      maxProcessHwmKb: this.maxProcessHwmKb,
      maxHwmByComm: { ...this.maxHwmByComm },
      peakProcesses: this.peakProcesses,
      samples: this.samples,
    };
  }

  private sample(forcePss = false): void {
    const now = performance.now();
    const withPss = this.pssEveryMs !== undefined && (forcePss || now - this.lastPss >= this.pssEveryMs);
    if (withPss) this.lastPss = now;
    let rss = 0;
    let pss = 0;
    let n = 0;
    for (const pid of this.pids()) {
      const mem = readMemory(pid);
      if (!mem) continue;
      n++;
      rss += mem.rssKb;
      this.maxProcessHwmKb = Math.max(this.maxProcessHwmKb, mem.hwmKb);
      const comm = readStat(pid)?.comm ?? '?';
      this.maxHwmByComm[comm] = Math.max(this.maxHwmByComm[comm] ?? 0, mem.hwmKb);
      if (withPss) pss += readPssKb(pid) ?? 0;
    }
    this.samples++;
    this.peakProcesses = Math.max(this.peakProcesses, n);
    this.peakRssSumKb = Math.max(this.peakRssSumKb, rss);
    this.peakPssSumKb = Math.max(this.peakPssSumKb, pss);
  }
}

/**
 * CPU time used so far by a process and everything it started: its own
 * utime+stime, its live descendants', and what its reaped children used.
 */
export function treeCpuTicks(root: number): number {
  let total = 0;
  for (const pid of processTree(root)) {
    const st = readStat(pid);
    if (!st) continue;
    total += st.cpuTicks + st.childCpuTicks;
  }
  return total;
}

/** Busy CPU time of the whole machine so far (user, nice, system, irq, softirq, steal from /proc/stat), clock ticks. */
export function machineBusyTicks(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  return (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
}

/**
 * CPU used on the machine during a measurement by anything but the
 * benchmark: all busy time minus this process's tree (the bench, smtp-source,
 * smtp-sink, the servers it spawned and the children they reaped) and the
 * trees of other roots it measures (Postfix's master, which daemonizes).
 * What remains is kernel threads (the filesystem journal, block I/O) and
 * whatever else runs on the machine; a large figure means the run was
 * disturbed.
 */
export class OtherCpu {
  private busy0 = 0;
  private ours0 = 0;

  constructor(private readonly roots: () => number[]) {}

  private ours(): number {
    const pids = new Set<number>();
    for (const root of [process.pid, ...this.roots()]) for (const pid of processTree(root)) pids.add(pid);
    let t = 0;
    for (const pid of pids) {
      const st = readStat(pid);
      if (st) t += st.cpuTicks + st.childCpuTicks;
    }
    return t;
  }

  start(): void {
    this.busy0 = machineBusyTicks();
    this.ours0 = this.ours();
  }

  /** Seconds of CPU used by others since start(). */
  seconds(): number {
    const other = machineBusyTicks() - this.busy0 - (this.ours() - this.ours0);
    return Math.round((Math.max(0, other) / CLOCK_TICKS_PER_SECOND) * 100) / 100;
  }
}
