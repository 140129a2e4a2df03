/** Shared test helpers: external tools, spawned servers, temporary files. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import tap, { type Test } from 'tap';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CLI = path.join(ROOT, 'dist/core/cli.js');

export function hasTool(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

/**
 * Options for a test that needs peer programs. Missing ones skip the test on a
 * developer machine; under CI=true (where .ci/run must have installed them)
 * they are a failure instead.
 */
export function needs(...tools: string[]): { skip: string | false } {
  const missing = tools.filter((x) => !hasTool(x));
  if (missing.length === 0) return { skip: false };
  if (process.env.CI === 'true') {
    tap.fail(`${missing.join(', ')} not installed: CI must install it`);
    return { skip: false };
  }
  return { skip: `${missing.join(', ')} not installed` };
}

export async function tempDir(t: Test, prefix = 'yubin-t-'): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export async function writeFiles(dir: string, files: Record<string, string>): Promise<void> {
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
}

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to completion. */
export function run(cmd: string, args: readonly string[], options: { input?: string; cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeout ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    // A program that never reads its input (openssl passwd) may be gone before we write: not an error.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

export function yubin(args: readonly string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], options);
}

/**
 * `yubin ARGS -c CONFIG` run through `wrapper` (another user: setpriv), each
 * run asserted to exit 0 on `t`; resolves with the run.
 */
export function yubinAs(t: Test, wrapper: (cmd: readonly string[]) => string[], config: string): (...args: string[]) => Promise<RunResult> {
  return async (...args) => {
    const [cmd, ...rest] = wrapper([process.execPath, CLI, ...args, '-c', config]);
    const r = await run(cmd!, rest);
    t.equal(r.code, 0, `yubin ${args.join(' ')} -c ${path.basename(config)}: ${r.stderr}`);
    return r;
  };
}

export interface ServeProcess {
  readonly child: ChildProcess;
  /** Bound port of each listener, from the server's own log. */
  readonly ports: Record<string, number>;
  /** Every log line so far. */
  readonly logs: Array<Record<string, unknown>>;
  /** Resolves with the first log line that passes the test. */
  waitLog(test: (line: Record<string, unknown>) => boolean, timeout?: number): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Everything the server wrote on stderr so far, from its start. */
  stderr(): string;
}

/**
 * Runs `yubin serve --config FILE` and waits until every listener is bound and the server is ready.
 * `wrapper` runs it under another program that ends by exec'ing its arguments (the server keeps its PID);
 * `cli` is another yubin's cli.js (an installed copy).
 */
export async function serve(t: Test, configFile: string, listenerCount: number, wrapper: readonly string[] = [], cli = CLI): Promise<ServeProcess> {
  const command = [...wrapper, process.execPath, cli, 'serve', '--config', configFile];
  const child = spawn(command[0]!, command.slice(1), { env: { ...process.env, YUBIN_LOG_FORMAT: 'json' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  const ports: Record<string, number> = {};
  const watchers: Array<() => void> = [];
  let stderr = '';
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        logs.push(rec);
        if (rec.event === 'listen') ports[rec.listener as string] = rec.port as number;
      } catch {
        logs.push({ raw: line });
      }
      for (const w of watchers) w();
    }
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const waitLog = (test: (line: Record<string, unknown>) => boolean, timeout = 15_000) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const check = () => {
        const hit = logs.find(test);
        if (hit) {
          clearTimeout(timer);
          watchers.splice(watchers.indexOf(check), 1);
          resolve(hit);
        }
      };
      const timer = setTimeout(() => reject(new Error(`log line not seen; stderr: ${stderr}`)), timeout);
      watchers.push(check);
      check();
    });
  const proc: ServeProcess = {
    child,
    ports,
    logs,
    waitLog,
    exited,
    stderr: () => stderr,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  await Promise.race([
    (async () => {
      while (Object.keys(ports).length < listenerCount) await waitLog(() => Object.keys(ports).length >= listenerCount);
      // Listeners are up first; the queue and the control socket follow, then `ready`.
      await waitLog((l) => l.event === 'ready');
    })(),
    exited.then((code) => {
      throw new Error(`yubin serve exited with ${code}: ${stderr}`);
    }),
  ]);
  return proc;
}

import { sleep as sleepMs } from './peers/net.js';
export { freePort, freePorts, sleep } from './peers/net.js';

/** Polls fn every 50 ms until it gives something other than undefined; throws after ms. */
export async function waitFor<T>(fn: () => Promise<T | undefined> | T | undefined, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleepMs(50);
  }
}
