/**
 * clamd for tests: a child process on a free loopback port with a one-line
 * database (EICAR as a custom .ndb body signature, since freshclam cannot
 * download here), in a temporary directory owned by clamav; stopped by PID
 * when the test ends.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { ping } from '../../plugins/clamav/clamd.js';
import { freePort, sleep } from './net.js';

export const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
/** The name clamd reports for the custom signature (.UNOFFICIAL is added for non-official databases). */
export const EICAR_SIGNATURE = 'Custom.EICAR.NDB.UNOFFICIAL';

export interface ClamdPeer {
  readonly host: string;
  readonly port: number;
  readonly dir: string;
  readonly child: ChildProcess;
  /** Stops clamd (SIGTERM to its PID) and waits until it is gone. */
  stop(): Promise<void>;
}

export function clamavIds(): { uid: number; gid: number } | undefined {
  const r = spawnSync('id', ['-u', 'clamav']);
  const g = spawnSync('id', ['-g', 'clamav']);
  if (r.status !== 0 || g.status !== 0) return undefined;
  return { uid: Number(r.stdout.toString().trim()), gid: Number(g.stdout.toString().trim()) };
}

/**
 * A clamd.conf in `dir` for 127.0.0.1:PORT with a one-signature EICAR
 * database (freshclam cannot download here); returns its path. As root,
 * clamd drops to the clamav user, which must be able to read all of it.
 */
export async function writeClamdConfig(dir: string, port: number, streamMaxLength = '25M'): Promise<string> {
  const db = path.join(dir, 'db');
  await mkdir(db, { recursive: true });
  await writeFile(path.join(db, 'custom.ndb'), `Custom.EICAR.NDB:0:*:${Buffer.from(EICAR).toString('hex')}\n`);
  const ids = os.userInfo().uid === 0 ? clamavIds() : undefined;
  const conf = [
    `TCPSocket ${port}`,
    'TCPAddr 127.0.0.1',
    `DatabaseDirectory ${db}`,
    `TemporaryDirectory ${dir}`,
    'Foreground yes',
    ...(ids ? ['User clamav'] : []),
    `StreamMaxLength ${streamMaxLength}`,
    'LogTime no',
  ].join('\n');
  const file = path.join(dir, 'clamd.conf');
  await writeFile(file, conf + '\n');
  if (ids) for (const p of [dir, db, path.join(db, 'custom.ndb'), file]) await chown(p, ids.uid, ids.gid);
  return file;
}

/** clamd as a child on a free loopback port, ready when it answers zPING with PONG; stopped by PID when `t` ends. */
export async function startClamd(t: Test, opts: { streamMaxLength?: string } = {}): Promise<ClamdPeer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'yubin-clamd-'));
  const port = await freePort();
  const conf = await writeClamdConfig(dir, port, opts.streamMaxLength);

  const child = spawn('clamd', ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const stop = async () => {
    if (!gone && child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGTERM');
    const timer = setTimeout(() => {
      if (!gone) process.kill(child.pid!, 'SIGKILL');
    }, 10_000);
    await exited;
    clearTimeout(timer);
  };
  t.teardown(async () => {
    await stop();
    await rm(dir, { recursive: true, force: true });
  });

  const target = { host: '127.0.0.1', port };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (gone) throw new Error(`clamd exited with ${child.exitCode ?? child.signalCode}: ${out}`);
    if (await ping(target, { connectTimeout: 500, timeout: 1_000 })) break;
    if (Date.now() > deadline) throw new Error(`clamd did not answer PING: ${out}`);
    await sleep(100);
  }
  return { host: '127.0.0.1', port, dir, child, stop };
}
