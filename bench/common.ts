/** Helpers shared by the benchmark runners (bench/smtp-accept, bench/queue). */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The yubin checkout this file was built from (the directory whose package.json is named yubin). */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'yubin-mail') return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the yubin checkout above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

export function parseList(value: string, what: string): number[] {
  const list = value.split(',').map((s) => Number(s.trim()));
  if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n <= 0)) throw new Error(`--${what}: expected positive integers separated by commas, got ${value}`);
  return list;
}

export function positive(value: string | undefined, what: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${what}: expected a positive integer, got ${value}`);
  return n;
}

/** A command's trimmed stdout, or '' when it fails. */
export function sh(cmd: string, args: string[], cwd?: string): string {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

/** Rows as an aligned text table: first column left-aligned, the rest right-aligned. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

export function machineInfo(workdir: string) {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? '?',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    workdir,
    workdirFilesystem: sh('stat', ['-f', '-c', '%T', workdir]),
    /** 1, 5 and 15 minute load averages when the run started: anything else busy on the machine shows here. */
    loadAverageAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export const loadAverage = () => os.loadavg().map((x) => Math.round(x * 100) / 100);

export function gitInfo(root: string) {
  return {
    commit: sh('git', ['rev-parse', 'HEAD'], root),
    /** core/, plugins/ or config/ had uncommitted changes when the run started. */
    dirty: sh('git', ['status', '--porcelain', '--', 'core', 'plugins', 'config'], root) !== '',
  };
}

export const mb = (kb: number) => Math.round((kb / 1024) * 10) / 10;

/** A seeded PRNG (mulberry32): a run's random choices are repeatable from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * For a benchmark's child server: `close` once on SIGTERM, SIGINT or when the
 * parent's stdin goes away (the parent died without stopping us), then exit.
 */
export function exitWhenTold(close: () => Promise<void> | undefined): (code: number) => Promise<void> {
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    try {
      await close();
    } finally {
      process.exit(code);
    }
  };
  process.once('SIGTERM', () => void stop(0));
  process.once('SIGINT', () => void stop(0));
  process.stdin.on('end', () => void stop(0)).resume();
  return stop;
}

/**
 * Runs a benchmark's main with its peers stopped however it ends (error,
 * SIGINT, SIGTERM), then exits: 0 done, 1 failed, 130 interrupted.
 */
export async function runBench(name: string, main: () => Promise<void>, stopAll: () => Promise<void>): Promise<never> {
  const onSignal = () => void stopAll().finally(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let exitCode = 0;
  try {
    await main();
  } catch (err) {
    process.stderr.write(`${name} bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    exitCode = 1;
  } finally {
    await stopAll();
  }
  process.exit(exitCode);
}

/** A benchmark child server's settings, passed as JSON in an environment variable. */
export function childInput<T>(variable: string): T {
  const input = JSON.parse(process.env[variable] ?? 'null') as T | null;
  if (!input) {
    process.stderr.write(`yubin-server: ${variable} is not set\n`);
    process.exit(2);
  }
  return input;
}
