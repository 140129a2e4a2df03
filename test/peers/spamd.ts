/**
 * SpamAssassin's spamd for tests: a child process in its own process group on
 * a free loopback port (-L: no network tests), ready once it answers PING;
 * stopped by killing that group (the parent and its preforked children) when
 * the test ends, and killed for sure if the test process exits first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { freePort, sleep } from './net.js';

export interface SpamdPeer {
  readonly host: string;
  readonly port: number;
  readonly child: ChildProcess;
  /** Stops spamd and its children; safe to call twice. */
  stop(): Promise<void>;
}

/** `PING SPAMC/1.5` → true on `SPAMD/1.x 0 PONG`. */
export function pingSpamd(port: number, host = '127.0.0.1', timeout = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection({ host, port });
    let got = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeout);
    s.on('connect', () => s.end('PING SPAMC/1.5\r\n\r\n'));
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('end', () => done(/^SPAMD\/1\.\d+ 0 PONG\r\n/.test(got)));
    s.on('error', () => done(false));
  });
}

/** A live (not zombie) process is left in the group. */
export function groupAlive(pgid: number): boolean {
  if (existsSync('/proc/self/stat')) {
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        if (Number(f[2]) === pgid && f[0] !== 'Z') return true;
      } catch {
        /* gone meanwhile */
      }
    }
    return false;
  }
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** spamd kept off the network (-L), on 127.0.0.1:PORT, with `children` preforked children and its pidfile in `dir`. */
export function spamdArgs(dir: string, port: number, children = 2): string[] {
  return [
    '-L',
    ...(os.userInfo().uid === 0 ? ['-u', 'debian-spamd'] : []),
    `--listen=127.0.0.1:${port}`,
    '--allowed-ips=127.0.0.1',
    '-m',
    String(children),
    '--min-spare=1',
    `--max-spare=${children}`,
    `--pidfile=${path.join(dir, 'spamd.pid')}`,
    '--syslog=stderr',
    '--nouser-config',
  ];
}

export async function startSpamd(t: Test): Promise<SpamdPeer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'yubin-spamd-'));
  const port = await freePort();
  const args = spamdArgs(dir, port);
  // detached: its own process group, so one kill reaches the preforked children too.
  const child = spawn('spamd', args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const pgid = child.pid!;
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  child.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const killGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-pgid, signal);
    } catch {
      /* already gone */
    }
  };
  // Last resort if the test process ends without teardown (a crash): never leave spamd behind.
  const onExit = () => killGroup('SIGKILL');
  process.on('exit', onExit);

  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      killGroup('SIGTERM');
      const deadline = Date.now() + 5000;
      await Promise.race([exited, sleep(5000)]);
      while (groupAlive(pgid) && Date.now() < deadline) await sleep(50);
      if (groupAlive(pgid)) killGroup('SIGKILL');
      await exited;
      process.off('exit', onExit);
      await rm(dir, { recursive: true, force: true });
    })());
  t.teardown(stop);

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`spamd exited (${child.exitCode ?? child.signalCode}): ${out}`);
    if (await pingSpamd(port)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`spamd did not answer PING within 30 s: ${out}`);
    }
    await sleep(200);
  }
  return { host: '127.0.0.1', port, child, stop };
}
