/** redis-server for tests: a child process on a free loopback port, stopped by PID when the test ends. */
import type { ChildProcess } from 'node:child_process';
import { startDaemon } from './daemon.js';
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
  const { child, stop } = await startDaemon(t, 'redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], 'Ready to accept connections');
  return { url: `redis://127.0.0.1:${port}/0`, port, child, stop };
}

