/**
 * The anti-spam benchmark's processes: rbldnsd (three ip4set DNSBL zones),
 * the loopback DNS server (dns-server.ts: PTR/A, forwarding the DNSBL zones
 * to rbldnsd) and yubin (yubin-server.ts), each a child process stopped by
 * its PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { chmodSync, closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import dnsPacket from 'dns-packet';
import { freePort, sleep, stopChild } from '../smtp-accept/proc.js';
import { tail } from '../smtp-accept/servers.js';
import type { Input as YubinInput } from './yubin-server.js';

const here = path.dirname(fileURLToPath(import.meta.url));

export interface Child {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly logFile: string;
  stop(): Promise<void>;
}

/** Every child started here, so a failing run can still stop them all (each by its PID). */
const started = new Set<Child>();

export async function stopAll(): Promise<void> {
  for (const c of [...started]) await c.stop().catch(() => undefined);
}

function track(child: ChildProcess, logFile: string, signal: NodeJS.Signals = 'SIGTERM'): Child {
  const c: Child = {
    child,
    pid: child.pid!,
    logFile,
    async stop() {
      started.delete(c);
      await stopChild(child, signal, 10_000);
    },
  };
  started.add(c);
  return c;
}

/** Starts a Node script of ours with its input in an environment variable; resolves with the port it prints. */
async function startNodeChild(script: string, envName: string, input: unknown, logFile: string, nodeArgs: string[] = [], ipc = false): Promise<{ c: Child; port: number }> {
  const err = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [...nodeArgs, path.join(here, script)], {
      stdio: ipc ? ['pipe', 'pipe', err, 'ipc'] : ['pipe', 'pipe', err],
      env: { ...process.env, [envName]: JSON.stringify(input) },
    });
  } finally {
    closeSync(err);
  }
  const c = track(child, logFile);
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${script} did not start within 30 s:\n${tail(logFile)}`)), 30_000);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => {
      buf += s;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      resolve((JSON.parse(buf.slice(0, nl)) as { port: number }).port);
    });
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited ${code ?? sig} before it was ready:\n${tail(logFile)}`));
    });
  }).catch(async (e: unknown) => {
    await c.stop();
    throw e;
  });
  return { c, port };
}

// ---------------------------------------------------------------- rbldnsd

export interface Zone {
  readonly name: string;
  /** Listed client addresses. */
  readonly listed: string[];
}

/** One UDP query; resolves with the decoded answer or undefined on timeout. */
export function query(port: number, name: string, type: 'A' | 'PTR' | 'TXT', timeoutMs = 500): Promise<dnsPacket.Packet | undefined> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      resolve(undefined);
    }, timeoutMs);
    s.on('message', (msg) => {
      clearTimeout(timer);
      s.close();
      resolve(dnsPacket.decode(msg));
    });
    s.send(dnsPacket.encode({ type: 'query', id: 4242, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] }), port, '127.0.0.1');
  });
}

async function waitDns(port: number, name: string, type: 'A' | 'PTR', what: string, dead: () => boolean): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (dead()) throw new Error(`${what} exited`);
    const r = await query(port, name, type, 200);
    if (r) return;
    await sleep(100);
  }
  throw new Error(`${what} did not answer on 127.0.0.1:${port}`);
}

/** rbldnsd in the foreground (-n) on 127.0.0.1:PORT with one ip4set zone file per zone. */
export async function startRbldnsd(dir: string, zones: readonly Zone[]): Promise<{ c: Child; port: number }> {
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  const args: string[] = [];
  for (const z of zones) {
    const file = `${z.name}.zone`;
    writeFileSync(path.join(dir, file), [`:127.0.0.2:Listed in ${z.name}: $`, ...z.listed, ''].join('\n'), { mode: 0o644 });
    args.push(`${z.name}:ip4set:${file}`);
  }
  const port = await freePort();
  const logFile = path.join(dir, 'rbldnsd.log');
  const out = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn('rbldnsd', ['-n', '-r', dir, '-b', `127.0.0.1/${port}`, '-u', 'rbldns', '-t', '3600', ...args], { stdio: ['ignore', out, out] });
  } finally {
    closeSync(out);
  }
  const c = track(child, logFile);
  try {
    await waitDns(port, `2.0.0.127.${zones[0]!.name}`, 'A', 'rbldnsd', () => child.exitCode !== null || child.signalCode !== null);
  } catch (e) {
    await c.stop();
    throw new Error(`${(e as Error).message}\n${tail(logFile)}`);
  }
  return { c, port };
}

// ---------------------------------------------------------------- DNS server

export async function startDnsServer(
  logFile: string,
  records: Record<string, { A?: string[]; PTR?: string[] }>,
  forwardZones: string[],
  forwardTo: number,
): Promise<{ c: Child; port: number }> {
  const r = await startNodeChild('dns-server.js', 'YUBIN_BENCH_DNS', { records, forwardZones, forwardTo, ttl: 3600 }, logFile);
  await waitDns(r.port, 'nothing.invalid', 'A', 'dns-server', () => r.c.child.exitCode !== null);
  return r;
}

/** The DNS server's counters: queries answered itself and forwarded to rbldnsd. */
export async function dnsStats(port: number): Promise<{ answered: number; forwarded: number; dropped: number }> {
  const r = await query(port, 'stats.bench.invalid', 'TXT');
  const data = (r?.answers?.[0] as { data?: Buffer[] } | undefined)?.data;
  if (!data) throw new Error('no stats from dns-server');
  return JSON.parse(Buffer.concat(data).toString()) as { answered: number; forwarded: number; dropped: number };
}

// ---------------------------------------------------------------- yubin

export interface Yubin {
  readonly c: Child;
  readonly port: number;
  readonly dataDir: string;
  /** process.memoryUsage() of the server after a full GC. */
  memory(): Promise<NodeJS.MemoryUsage>;
}

export async function startYubin(input: YubinInput, logFile: string): Promise<Yubin> {
  mkdirSync(input.dataDir, { recursive: true });
  const { c, port } = await startNodeChild('yubin-server.js', 'YUBIN_BENCH_ANTISPAM', input, logFile, ['--expose-gc'], true);
  return {
    c,
    port,
    dataDir: input.dataDir,
    memory: () =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no memory answer from yubin')), 10_000);
        const on = (m: { type?: string; usage?: NodeJS.MemoryUsage }) => {
          if (m?.type !== 'memory') return;
          clearTimeout(timer);
          c.child.off('message', on);
          resolve(m.usage!);
        };
        c.child.on('message', on);
        c.child.send({ type: 'memory' });
      }),
  };
}
