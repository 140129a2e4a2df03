/** redis-server for tests: a child process on a free loopback port, stopped by PID when the test ends. */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Test } from 'tap';
import { freePort } from '../helpers.js';

export interface RedisPeer {
  readonly url: string;
  readonly port: number;
  readonly child: ChildProcess;
  stop(): Promise<void>;
}

/** redis-server as a child on a free loopback port; stopped by PID when `t` ends. */
export async function startRedis(t: Test, fixedPort?: number): Promise<RedisPeer> {
  const port = fixedPort ?? (await freePort());
  const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGTERM');
    await exited;
  };
  t.teardown(stop);
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start: ${out}`)), 10_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited with ${code}: ${out}`));
    });
  });
  return { url: `redis://127.0.0.1:${port}/0`, port, child, stop };
}

