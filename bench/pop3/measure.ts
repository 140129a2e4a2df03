/**
 * The two measurements, each one session on 127.0.0.1, checked as it goes:
 *
 * - login cycle: connect + greeting, USER, PASS, STAT, UIDL (the full
 *   listing), QUIT, one command at a time as a mail client does it; timed
 *   from before connect() to the QUIT reply.
 * - RETR run: log in, STAT, LIST and UIDL (untimed), then RETR every message
 *   with `window` commands outstanding, timed from the first RETR written to
 *   the last reply's terminator; then QUIT (timed apart). No DELE: nothing
 *   in the mailbox changes.
 */
import { treeCpuTicks, CLOCK_TICKS_PER_SECOND, MemorySampler, readMemory, readPssKb } from '../smtp-accept/proc.js';
import { Pop3Client, Pop3Error, type Pop3Response } from './client.js';
import type { PopServer } from './dovecot.js';
import { wireForm, type Mailbox, type MessageFile } from './mailbox.js';

export class CheckFailed extends Error {
  constructor(
    message: string,
    readonly exchanges: string[] = [],
  ) {
    super(message);
  }
}

export interface LoginSample {
  /** connect() to the QUIT reply, ms. */
  readonly ms: number;
  readonly steps: { readonly connect: number; readonly user: number; readonly pass: number; readonly stat: number; readonly uidl: number; readonly quit: number };
  /** CPU the server used for the session (Dovecot: once its per-session processes are reaped), ms. */
  readonly serverCpuMs: number;
}

export interface RetrSample {
  /** First RETR written to the last reply complete, ms. */
  readonly ms: number;
  readonly messages: number;
  /** Message octets (CRLF, dot-stuffing undone), as LIST sizes them. */
  readonly octets: number;
  readonly msgsPerSec: number;
  /** 10^6 octets per second. */
  readonly mbPerSec: number;
  /** Log-in, STAT, LIST, UIDL before the RETRs, ms. */
  readonly setupMs: number;
  readonly quitMs: number;
  readonly serverCpuSeconds: number;
  readonly clientCpuSeconds: number;
  /** Highest sum of VmRSS over the server's processes, sampled every 200 ms. */
  readonly peakRssMb: number;
  /** RETRs whose content was compared with the file byte for byte. */
  readonly contentChecked: number;
}

/** What the listings said about UIDs: qmail-pop3d and Dovecot's %f both show the file name up to ":". */
export interface UidlInfo {
  readonly uidlIsFileName: boolean;
  readonly example?: string;
}

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const ticksToMs = (t: number) => (t / CLOCK_TICKS_PER_SECOND) * 1000;

export function withTimeout<T>(p: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        onTimeout();
        reject(new Error(`${what}: no answer within ${ms / 1000} s`));
      }, ms);
    }),
  ]);
}

function checkStat(r: Pop3Response, box: Mailbox, exchanges: () => string[]): void {
  const m = /^\+OK (\d+) (\d+)/.exec(r.status);
  if (!m) throw new CheckFailed(`STAT -> ${JSON.stringify(r.status)}: not "+OK count octets"`, exchanges());
  const n = Number(m[1]);
  const octets = Number(m[2]);
  if (n !== box.messages.length || octets !== box.totalCrlf) {
    throw new CheckFailed(`STAT -> ${JSON.stringify(r.status)}, expected +OK ${box.messages.length} ${box.totalCrlf} (octets with CRLF line ends)`, exchanges());
  }
}

/** Parses "n value" lines of a UIDL or LIST listing, checking the numbering is 1..count. */
function parseListing(what: string, body: Buffer | undefined, count: number, exchanges: () => string[]): string[] {
  const text = (body ?? Buffer.alloc(0)).toString('latin1');
  const lines = text.split('\r\n');
  if (lines[lines.length - 1] === '') lines.pop();
  if (lines.length !== count) throw new CheckFailed(`${what} listed ${lines.length} messages, expected ${count}`, exchanges());
  const out: string[] = new Array<string>(count);
  for (let i = 0; i < count; i++) {
    const line = lines[i]!;
    const sp = line.indexOf(' ');
    if (sp < 0 || line.slice(0, sp) !== String(i + 1)) throw new CheckFailed(`${what} line ${i + 1} is ${JSON.stringify(line)}`, exchanges());
    out[i] = line.slice(sp + 1);
  }
  return out;
}

function checkUidl(uids: string[], byBase: ReadonlyMap<string, MessageFile>, exchanges: () => string[]): UidlInfo {
  const seen = new Set<string>();
  for (const u of uids) {
    if (seen.has(u)) throw new CheckFailed(`UIDL lists ${JSON.stringify(u)} twice`, exchanges());
    if (!/^[\x21-\x7e]{1,70}$/.test(u)) throw new CheckFailed(`UIDL ${JSON.stringify(u)} is not 1-70 characters 0x21-0x7E (RFC 1939)`, exchanges());
    seen.add(u);
  }
  const nonFile = uids.find((u) => !byBase.has(u));
  return nonFile === undefined ? { uidlIsFileName: true } : { uidlIsFileName: false, example: nonFile };
}

export interface Context {
  readonly server: PopServer;
  readonly box: Mailbox;
  readonly byBase: ReadonlyMap<string, MessageFile>;
  readonly user: string;
  readonly password: string;
  readonly timeoutMs: number;
}

/** One login cycle: connect, USER, PASS, STAT, UIDL, QUIT. */
export async function loginCycle(c: Context): Promise<{ sample: LoginSample; uidl: UidlInfo }> {
  const cpu0 = treeCpuTicks(c.server.rootPid);
  let client: Pop3Client | undefined;
  const exchanges = () => client?.lastExchanges() ?? [];
  const run = async () => {
    const t0 = performance.now();
    client = (await Pop3Client.connect(c.server.port)).client;
    const t1 = performance.now();
    await client.ok(`USER ${c.user}`);
    const t2 = performance.now();
    await client.ok(`PASS ${c.password}`);
    const t3 = performance.now();
    const stat = await client.ok('STAT');
    const t4 = performance.now();
    const uidl = await client.ok('UIDL', true, true);
    const t5 = performance.now();
    await client.ok('QUIT');
    const t6 = performance.now();
    return { t: [t0, t1, t2, t3, t4, t5, t6] as const, stat, uidl };
  };
  try {
    const { t, stat, uidl } = await withTimeout(run(), c.timeoutMs, `login cycle for ${c.user}`, () => client?.destroy());
    await client!.waitClosed(2000);
    client!.destroy();
    checkStat(stat, c.box, exchanges);
    const info = checkUidl(parseListing('UIDL', uidl.body, c.box.messages.length, exchanges), c.byBase, exchanges);
    await c.server.settle();
    const cpu = ticksToMs(treeCpuTicks(c.server.rootPid) - cpu0);
    const d = (a: number, b: number) => round(t[b]! - t[a]!);
    return {
      sample: { ms: d(0, 6), steps: { connect: d(0, 1), user: d(1, 2), pass: d(2, 3), stat: d(3, 4), uidl: d(4, 5), quit: d(5, 6) }, serverCpuMs: Math.round(cpu) },
      uidl: info,
    };
  } catch (err) {
    client?.destroy();
    if (err instanceof CheckFailed) throw err;
    throw new CheckFailed(err instanceof Error ? err.message : String(err), exchanges());
  }
}

/** Which messages get their content compared byte for byte: about `n` spread over the box. */
const sampled = (i: number, count: number, n: number) => i % Math.max(1, Math.floor(count / n)) === 0 || i === count - 1;

/** One RETR run: every message, `window` RETRs outstanding. */
export async function retrRun(c: Context, window: number, contentSamples: number): Promise<{ sample: RetrSample; uidl: UidlInfo }> {
  let client: Pop3Client | undefined;
  const exchanges = () => client?.lastExchanges() ?? [];
  const count = c.box.messages.length;
  const sampler = new MemorySampler(() => c.server.pids(), 200, undefined);
  try {
    const s0 = performance.now();
    client = (await withTimeout(Pop3Client.connect(c.server.port), c.timeoutMs, 'connect', () => undefined)).client;
    const cl = client;
    const step = <T>(p: Promise<T>, what: string) => withTimeout(p, c.timeoutMs, what, () => cl.destroy());
    await step(cl.ok(`USER ${c.user}`), 'USER');
    await step(cl.ok(`PASS ${c.password}`), 'PASS');
    checkStat(await step(cl.ok('STAT'), 'STAT'), c.box, exchanges);
    const list = await step(cl.ok('LIST', true, true), 'LIST');
    const sizes = parseListing('LIST', list.body, count, exchanges).map((s) => Number(s));
    const listTotal = sizes.reduce((a, b) => a + b, 0);
    if (listTotal !== c.box.totalCrlf) throw new CheckFailed(`LIST sizes add up to ${listTotal}, expected ${c.box.totalCrlf}`, exchanges());
    const uids = parseListing('UIDL', (await step(cl.ok('UIDL', true, true), 'UIDL')).body, count, exchanges);
    const info = checkUidl(uids, c.byBase, exchanges);
    // With file-name UIDs each message can be checked against its file: LIST size = W= of its name.
    const files = info.uidlIsFileName ? uids.map((u) => c.byBase.get(u)!) : undefined;
    if (files) {
      const bad = files.findIndex((f, i) => f.crlf !== sizes[i]);
      if (bad >= 0) throw new CheckFailed(`LIST ${bad + 1} says ${sizes[bad]} octets, but message ${uids[bad]} has ${files[bad]!.crlf} with CRLF line ends`, exchanges());
    }
    const setupMs = performance.now() - s0;

    const mismatches: string[] = [];
    let octets = 0;
    const bodies = new Map<number, Buffer>();
    const collect = (i: number) => files !== undefined && sampled(i, count, contentSamples);
    sampler.start();
    const cpu0 = treeCpuTicks(c.server.rootPid);
    const client0 = process.cpuUsage();
    const t0 = performance.now();
    await withTimeout(
      cl.pipeline(
        (i) => `RETR ${i + 1}`,
        count,
        window,
        true,
        collect,
        (i, r) => {
          if (!r.ok) throw new Pop3Error(`RETR ${i + 1} -> ${r.status}`, `RETR ${i + 1}`, r.status);
          octets += r.octets;
          if (r.octets !== sizes[i] && mismatches.length < 10) mismatches.push(`RETR ${i + 1} sent ${r.octets} octets, LIST said ${sizes[i]} (status ${JSON.stringify(r.status)})`);
          if (r.body) bodies.set(i, r.body);
        },
      ),
      c.timeoutMs,
      `RETR of ${count} messages`,
      () => cl.destroy(),
    );
    const t1 = performance.now();
    const clientCpu = process.cpuUsage(client0);
    const cpu = treeCpuTicks(c.server.rootPid) - cpu0;
    const peak = sampler.stop();
    await step(cl.ok('QUIT'), 'QUIT');
    const quitMs = performance.now() - t1;
    await cl.waitClosed(2000);
    cl.destroy();
    await c.server.settle();

    if (mismatches.length) throw new CheckFailed(`RETR sizes differ from LIST: ${mismatches.join('; ')}`, exchanges());
    if (octets !== c.box.totalCrlf) throw new CheckFailed(`RETR sent ${octets} octets in all, expected ${c.box.totalCrlf}`, exchanges());
    for (const [i, body] of bodies) {
      const want = wireForm(c.box, files![i]!);
      if (!body.equals(want)) {
        let at = 0;
        while (at < want.length && body[at] === want[at]) at++;
        throw new CheckFailed(
          `RETR ${i + 1} (${files![i]!.base}) differs from the file (LF -> CRLF) at octet ${at}: got ${JSON.stringify(body.toString('latin1', Math.max(0, at - 20), at + 20))}, want ${JSON.stringify(want.toString('latin1', Math.max(0, at - 20), at + 20))}`,
          exchanges(),
        );
      }
    }
    const ms = t1 - t0;
    return {
      sample: {
        ms: round(ms),
        messages: count,
        octets,
        msgsPerSec: Math.round(count / (ms / 1000)),
        mbPerSec: round(octets / 1e6 / (ms / 1000), 2),
        setupMs: round(setupMs),
        quitMs: round(quitMs),
        serverCpuSeconds: round(cpu / CLOCK_TICKS_PER_SECOND, 2),
        clientCpuSeconds: round((clientCpu.user + clientCpu.system) / 1e6, 2),
        peakRssMb: Math.round((peak.peakRssSumKb / 1024) * 10) / 10,
        contentChecked: bodies.size,
      },
      uidl: info,
    };
  } catch (err) {
    sampler.stop();
    client?.destroy();
    if (err instanceof CheckFailed) throw err;
    throw new CheckFailed(err instanceof Error ? err.message : String(err), exchanges());
  }
}

export interface SessionsSample {
  readonly sessions: number;
  /** Sum over the server's processes before the sessions opened, kB. */
  readonly beforeRssKb: number;
  readonly beforePssKb: number;
  /** The same with every session logged in (STAT and UIDL answered) and held open. */
  readonly heldRssKb: number;
  readonly heldPssKb: number;
  /** (held - before) / sessions, kB. */
  readonly perSessionRssKb: number;
  readonly perSessionPssKb: number;
  readonly processesHeld: number;
}

function memorySum(pids: readonly number[]): { rss: number; pss: number } {
  let rss = 0;
  let pss = 0;
  for (const p of pids) {
    rss += readMemory(p)?.rssKb ?? 0;
    pss += readPssKb(p) ?? 0;
  }
  return { rss, pss };
}

/**
 * Memory per session: `boxes.length` sessions, each logged in to its own
 * mailbox (STAT and the full UIDL answered), all held open at once; the
 * server's RSS and PSS (summed over its processes) then, against just
 * before they connected. Each is settled for `settleMs` first.
 */
export async function sessionsRun(c: Omit<Context, 'box' | 'user'>, boxes: ReadonlyArray<{ user: string; box: Mailbox }>, settleMs = 1000): Promise<SessionsSample> {
  const clients: Pop3Client[] = [];
  try {
    await c.server.settle();
    await new Promise((r) => setTimeout(r, settleMs));
    const before = memorySum(c.server.pids());
    await withTimeout(
      Promise.all(
        boxes.map(async ({ user, box }) => {
          const { client } = await Pop3Client.connect(c.server.port);
          clients.push(client);
          await client.ok(`USER ${user}`);
          await client.ok(`PASS ${c.password}`);
          checkStat(await client.ok('STAT'), box, () => client.lastExchanges());
          await client.ok('UIDL', true, true);
        }),
      ),
      c.timeoutMs,
      `${boxes.length} sessions`,
      () => clients.forEach((cl) => cl.destroy()),
    );
    await new Promise((r) => setTimeout(r, settleMs));
    const pids = c.server.pids();
    const held = memorySum(pids);
    await Promise.all(clients.map((cl) => cl.ok('QUIT').then(() => cl.waitClosed(2000))));
    const n = boxes.length;
    return {
      sessions: n,
      beforeRssKb: before.rss,
      beforePssKb: before.pss,
      heldRssKb: held.rss,
      heldPssKb: held.pss,
      perSessionRssKb: Math.round((held.rss - before.rss) / n),
      perSessionPssKb: Math.round((held.pss - before.pss) / n),
      processesHeld: pids.length,
    };
  } catch (err) {
    if (err instanceof CheckFailed) throw err;
    throw new CheckFailed(err instanceof Error ? err.message : String(err), clients[0]?.lastExchanges() ?? []);
  } finally {
    for (const cl of clients) cl.destroy();
  }
}
