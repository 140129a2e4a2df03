/**
 * PostgreSQL for tests: Debian's initdb and postgres (/usr/lib/postgresql/N/bin)
 * make a throw-away cluster in a temporary directory, listening on 127.0.0.1
 * at a free port with its unix socket in that directory, fsync off. Stopped by
 * PID (fast shutdown) and the directory removed when the test ends.
 *
 * initdb and postgres refuse to run as root: as root they run as the
 * `postgres` system user through setpriv, which execs (no fork), so the PID we
 * hold is the postmaster's own.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import tap, { type Test } from 'tap';
import { freePort, sleep } from './net.js';

export interface PostgresPeer {
  readonly port: number;
  /** URL of the `postgres` database (superuser `yubin`, trust authentication on loopback). */
  readonly url: string;
  /** Makes an empty database and answers its URL: each test case its own, on one server. */
  createDatabase(name: string): Promise<string>;
  /** Fast shutdown (clients disconnected); safe to call twice. */
  stop(): Promise<void>;
  /** Starts the same cluster again on the same port, after stop(). */
  start(): Promise<void>;
}

/** The newest Debian PostgreSQL binaries with both initdb and postgres. */
export function postgresBinDir(): string | undefined {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const bin = path.join(base, v, 'bin');
    if (existsSync(path.join(bin, 'initdb')) && existsSync(path.join(bin, 'postgres'))) return bin;
  }
  return undefined;
}

const asRoot = () => os.userInfo().uid === 0;

function postgresUser(): { uid: number; gid: number } | undefined {
  const r = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  return r.status === 0 && g.status === 0 ? { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) } : undefined;
}

/** Options for `t.test(name, needsPostgres(), fn)`: skip without PostgreSQL, fail under CI=true (as `needs()` does). */
export function needsPostgres(): { skip: string | false } {
  const missing = !postgresBinDir()
    ? 'PostgreSQL not installed (no initdb and postgres in /usr/lib/postgresql/*/bin)'
    : asRoot() && !postgresUser()
      ? 'no postgres system user to run PostgreSQL as (running as root)'
      : undefined;
  if (!missing) return { skip: false };
  if (process.env.CI === 'true') {
    tap.fail(`${missing}: CI must install it`);
    return { skip: false };
  }
  return { skip: missing };
}

/** The command line for one of PostgreSQL's programs, as the postgres user when we are root. */
function command(bin: string, program: string, args: readonly string[]): [string, string[]] {
  const exe = path.join(bin, program);
  return asRoot() ? ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', '--', exe, ...args]] : [exe, [...args]];
}

export async function startPostgres(t: Test): Promise<PostgresPeer> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin)');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'yubin-pg-'));
  const data = path.join(dir, 'data');
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stopping: Promise<void> | undefined;
  // Last resort if the test process ends without teardown: never leave a postmaster behind.
  const onExit = () => {
    if (child?.pid && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGQUIT');
  };
  process.on('exit', onExit);
  const cleanup = async () => {
    await stop();
    process.off('exit', onExit);
    await rm(dir, { recursive: true, force: true });
  };
  t.teardown(cleanup);

  if (asRoot()) {
    const user = postgresUser();
    if (!user) throw new Error('running as root and there is no postgres user to run PostgreSQL as');
    await chown(dir, user.uid, user.gid);
  }
  const [initCmd, initArgs] = command(bin, 'initdb', ['-D', data, '-U', 'yubin', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions']);
  const init = spawnSync(initCmd, initArgs, { encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb failed (${init.status}): ${init.stderr || init.stdout}`);

  const port = await freePort();
  const url = `postgres://yubin@127.0.0.1:${port}/postgres`;

  async function start(): Promise<void> {
    stopping = undefined;
    const [cmd, args] = command(bin!, 'postgres', [
      '-D',
      data,
      '-p',
      String(port),
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      `unix_socket_directories=${dir}`,
      '-c',
      'fsync=off',
      '-c',
      'synchronous_commit=off',
      '-c',
      'full_page_writes=off',
      '-c',
      'max_connections=50',
    ]);
    const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    let out = '';
    const keep = (d: Buffer) => (out = (out + d.toString()).slice(-4000));
    proc.stdout!.on('data', keep);
    proc.stderr!.on('data', keep);
    exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`postgres exited (${proc.exitCode ?? proc.signalCode}): ${out}`);
      if (out.includes('ready to accept connections') && (await canConnect(url))) return;
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`postgres did not start within 30 s: ${out}`);
      }
      await sleep(50);
    }
  }

  function stop(): Promise<void> {
    return (stopping ??= (async () => {
      const proc = child;
      if (!proc?.pid || proc.exitCode !== null || proc.signalCode !== null) return;
      // SIGINT: fast shutdown, open connections are ended (SIGTERM would wait for them).
      process.kill(proc.pid, 'SIGINT');
      // Still there after 10 s: immediate shutdown. The timer must not keep the test process alive.
      const timer = setTimeout(() => proc.exitCode === null && proc.signalCode === null && process.kill(proc.pid!, 'SIGQUIT'), 10_000);
      await exited;
      clearTimeout(timer);
    })());
  }

  await start();
  return {
    port,
    url,
    async createDatabase(name: string) {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE "${name.replace(/"/g, '')}"`);
      } finally {
        await c.end();
      }
      return `postgres://yubin@127.0.0.1:${port}/${name}`;
    },
    stop,
    start,
  };
}

async function canConnect(url: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
  c.on('error', () => undefined);
  try {
    await c.connect();
    await c.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => undefined);
  }
}
