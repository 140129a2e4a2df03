/**
 * rbldnsd (Debian's package) on a loopback UDP port, with ip4set zones the
 * test writes: the DNSBL peer for rblsmtpd and `yubin why` tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { chmod } from 'node:fs/promises';
import { Resolver } from 'node:dns/promises';
import path from 'node:path';
import type { Test } from 'tap';
import { sleep, tempDir, writeFiles } from '../helpers.js';

/** A free loopback UDP port (free a moment ago). */
export function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.on('error', reject);
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export interface Rbldnsd {
  readonly address: string;
  readonly child: ChildProcess;
}

/**
 * rbldnsd on a loopback port with these ip4set zones (name → file text).
 * Runs as the rbldns user the Debian package creates (it refuses to run as root).
 */
export async function startRbldnsd(t: Test, zones: Record<string, string>): Promise<Rbldnsd> {
  const dir = await tempDir(t, 'yubin-rbldnsd-');
  await chmod(dir, 0o755);
  await writeFiles(dir, Object.fromEntries(Object.entries(zones).map(([z, text]) => [`${z}.zone`, text])));
  for (const z of Object.keys(zones)) await chmod(path.join(dir, `${z}.zone`), 0o644);
  let lastErr = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freeUdpPort();
    const args = ['-n', '-q', '-r', dir, '-b', `127.0.0.1/${port}`];
    if (process.getuid?.() === 0) args.push('-u', 'rbldns');
    args.push(...Object.keys(zones).map((z) => `${z}:ip4set:${z}.zone`));
    const child = spawn('rbldnsd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    t.teardown(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    });
    // Ready when it answers; a zone that is not loaded gives REFUSED, a dead process nothing.
    const r = new Resolver({ timeout: 200, tries: 1 });
    r.setServers([`127.0.0.1:${port}`]);
    const probeZone = Object.keys(zones)[0]!;
    for (let i = 0; i < 50 && child.exitCode === null; i++) {
      try {
        await r.resolve4(`255.255.255.255.${probeZone}`);
        return { address: `127.0.0.1:${port}`, child };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOTFOUND') return { address: `127.0.0.1:${port}`, child };
      }
      await sleep(50);
    }
    lastErr = stderr;
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
  }
  throw new Error(`rbldnsd did not start: ${lastErr}`);
}
