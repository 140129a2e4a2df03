/**
 * A peer daemon as a child process: started in the foreground, ready once
 * its output shows a given line, stopped by PID (SIGTERM) when the test ends.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import type { Test } from 'tap';

export interface Daemon {
  readonly child: ChildProcess;
  /** SIGTERM by PID, then waits for the exit; safe to call twice. */
  stop(): Promise<void>;
}

export async function startDaemon(t: Pick<Test, 'teardown'>, cmd: string, args: readonly string[], ready: string | RegExp, options: SpawnOptions = {}): Promise<Daemon> {
  const child = spawn(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGTERM');
    await exited;
  };
  t.teardown(stop);
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start: ${out}`)), 10_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      if (typeof ready === 'string' ? out.includes(ready) : ready.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited with ${code}: ${out}`));
    });
  });
  return { child, stop };
}
