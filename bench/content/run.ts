/**
 * What do the content filters cost? yubin (its own process, queue held) with
 * one SMTP listener in four configurations: rcpthosts alone ("none"),
 * + spamassassin, + clamav, + both, against a real spamd (-L, -m 2) and a
 * real clamd (one-signature EICAR database), all on loopback:
 *
 * (a) added latency per message: from sending the final dot of DATA to the
 *     250 reply, one message at a time, realistic clean text messages of
 *     5 KB and 500 KB (spamassassin maxSize raised to 1 MB so both sizes are
 *     checked; clamav defaults); p50/p90 and the difference to "none";
 * (b) acceptance msgs/s with both filters against none: a fixed load of 5 KB
 *     messages over a few concurrent sessions, a new connection per message.
 *
 *     node dist/bench/content/run.js [--quick] [options]   (--help)
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadAverage, machineInfo, positive, prng, repoRoot, runBench, sh, table } from '../common.js';
import { connect, ReplyReader } from '../antispam/client.js';
import { freePort, OtherCpu, readMemory, sleep } from '../smtp-accept/proc.js';
import { yubinLogProblems } from '../smtp-accept/servers.js';
import { startClamd, startSpamd, startYubin, stopAll, type Yubin } from './peers.js';

const HELP = `node dist/bench/content/run.js [options]

  --quick              smoke run: 5 small + 3 large messages per configuration, 40 messages x 1 throughput run
  --small N            5 KB messages timed per configuration, default 50
  --large N            500 KB messages timed per configuration, default 15
  --warmup N           untimed messages of each size first, per configuration, default 3
  --messages N         messages per throughput run, default 200
  --sessions N         concurrent sessions in the throughput runs, default 4
  --repeat N           throughput runs per configuration (both, none alternating; the median is reported), default 3
  --spamd-children N   spamd -m, default 2
  --seed N             PRNG seed for the message texts, default 1
  --out FILE           result JSON (default bench/results/content-<date>[-quick].json)
  --keep               keep the run directory (configs, logs, spools)
`;

const SENDER = 'alice.martin@client.bench.test';
const RECIPIENT = 'postmaster@bench.test';
const SMALL = 5 * 1024;
const LARGE = 500 * 1024;
const SPAM_MAX_SIZE = 1024 * 1024;

type Config = 'none' | 'spamassassin' | 'clamav' | 'both';
const CONFIGS: Config[] = ['none', 'spamassassin', 'clamav', 'both'];

// ---------------------------------------------------------------- messages

const WORDS = (
  'the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her ' +
  'she there been one all we their has would when if more will so no what up out about into than them can only other new some ' +
  'time could these two may then do first any my now such like our over man me even most made after also did many before must ' +
  'through back years where much your way well down should because each just those people how too little state good very make ' +
  'world still own see men work long get here between both life being under never day same another know while last might us ' +
  'great old year off come since against go came right used take three meeting project report budget schedule team review ' +
  'quarter customer release contract invoice delivery update agenda office morning afternoon thanks attached draft proposal ' +
  'figures numbers plan week monday tuesday wednesday thursday friday question answer support service account order shipment ' +
  'colleague department manager design test version document notes minutes summary results progress change request approval'
).split(' ');
const NAMES = ['Alice Martin', 'Bruno Keller', 'Chiara Rossi', 'David Okafor', 'Emma Lindqvist', 'Farid Haddad', 'Grace Chen', 'Hugo Dubois'];
const SUBJECTS = ['Notes from the project meeting', 'Quarterly report draft', 'Re: delivery schedule for next week', 'Budget review agenda', 'Minutes and action items', 'Contract update', 'Re: question about the invoice', 'Release plan'];

/**
 * A plain-text business-style mail of about `bytes` octets: headers as a
 * mail client writes them, then paragraphs of ordinary English words wrapped
 * at 72 columns (CRLF line ends, no line starting with a dot). Neither GTUBE
 * nor EICAR: both scanners do their normal work on clean mail.
 */
export function cleanMessage(rand: () => number, serial: number, bytes: number): string {
  const pick = <T>(a: readonly T[]) => a[Math.floor(rand() * a.length)]!;
  const from = pick(NAMES);
  const to = pick(NAMES.filter((n) => n !== from));
  const date = new Date(Date.now() - 60_000).toUTCString().replace('GMT', '+0000');
  const head = [
    `Received: from client.bench.test (client.bench.test [127.0.0.1]) by mail.client.bench.test with ESMTP id B${serial}X; ${date}`,
    `Date: ${date}`,
    `From: ${from} <${SENDER}>`,
    `To: ${to} <${RECIPIENT}>`,
    `Subject: ${pick(SUBJECTS)}`,
    `Message-ID: <${serial}.${Math.floor(rand() * 1e9)}@client.bench.test>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    'Content-Transfer-Encoding: 7bit',
    'User-Agent: bench-mailer/1.0',
    '',
  ];
  const lines: string[] = [...head, `Hi ${to.split(' ')[0]},`, ''];
  let n = lines.reduce((a, l) => a + l.length + 2, 0);
  const sig = ['', 'Best regards,', from, 'Client Bench Ltd.'];
  const sigLen = sig.reduce((a, l) => a + l.length + 2, 0);
  while (n < bytes - sigLen) {
    // A paragraph of 3-7 sentences of 6-18 words.
    let para = '';
    const sentences = 3 + Math.floor(rand() * 5);
    for (let s = 0; s < sentences; s++) {
      const words = Array.from({ length: 6 + Math.floor(rand() * 13) }, () => pick(WORDS));
      words[0] = words[0]!.charAt(0).toUpperCase() + words[0]!.slice(1);
      para += (para ? ' ' : '') + words.join(' ') + (rand() < 0.1 ? '?' : '.');
    }
    let line = '';
    for (const w of para.split(' ')) {
      if (line && line.length + 1 + w.length > 72) {
        lines.push(line);
        n += line.length + 2;
        line = w;
      } else line = line ? `${line} ${w}` : w;
    }
    lines.push(line, '');
    n += line.length + 4;
  }
  return [...lines, ...sig].join('\r\n') + '\r\n';
}

// ---------------------------------------------------------------- the client

interface Sent {
  /** From writing the final dot (the body already handed to the kernel) to the 250, ms. */
  readonly endOfDataMs: number;
  readonly code: number;
}

/** One connection (greeting, EHLO, MAIL, RCPT, DATA), the body, then the dot timed alone. */
async function send(port: number, message: string): Promise<Sent> {
  const sock = await connect(port, '127.0.0.1');
  const r = new ReplyReader(sock);
  try {
    const expect = async (p: Promise<{ code: number; lines: string[] }>, code: number, what: string) => {
      const reply = await p;
      if (reply.code !== code) throw new Error(`${what}: ${reply.lines.join(' | ')}`);
    };
    await expect(r.next(), 220, 'greeting');
    await expect(r.command('EHLO client.bench.test'), 250, 'EHLO');
    await expect(r.command(`MAIL FROM:<${SENDER}> SIZE=${message.length}`), 250, 'MAIL');
    await expect(r.command(`RCPT TO:<${RECIPIENT}>`), 250, 'RCPT');
    await expect(r.command('DATA'), 354, 'DATA');
    await new Promise<void>((resolve, reject) => sock.write(message, 'latin1', (err) => (err ? reject(err) : resolve())));
    const t0 = performance.now();
    const end = await r.command('.');
    const endOfDataMs = performance.now() - t0;
    if (end.code !== 250) throw new Error(`end of data: ${end.lines.join(' | ')}`);
    await r.command('QUIT').catch(() => undefined);
    return { endOfDataMs, code: end.code };
  } finally {
    sock.destroy();
  }
}

// ---------------------------------------------------------------- statistics

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}
const r1 = (x: number) => Math.round(x * 10) / 10;
const r2 = (x: number) => Math.round(x * 100) / 100;
function summary(samples: readonly number[]) {
  const s = [...samples].sort((a, b) => a - b);
  return { n: s.length, p50: r2(percentile(s, 50)), p90: r2(percentile(s, 90)), max: r2(s[s.length - 1] ?? NaN), mean: r2(s.reduce((a, b) => a + b, 0) / (s.length || 1)) };
}
const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** The commit checked out, read from .git without running git. */
function commitOf(root: string): string {
  try {
    const head = readFileSync(path.join(root, '.git/HEAD'), 'utf8').trim();
    if (!head.startsWith('ref: ')) return head;
    const ref = head.slice(5);
    const loose = path.join(root, '.git', ref);
    if (existsSync(loose)) return readFileSync(loose, 'utf8').trim();
    const packed = readFileSync(path.join(root, '.git/packed-refs'), 'utf8');
    return packed.split('\n').find((l) => l.endsWith(' ' + ref))?.split(' ')[0] ?? '';
  } catch {
    return '';
  }
}

/** What the filters wrote into the spooled messages: checked by spamd / scanned by clamd, or marked unchecked. */
function spoolHeaders(dataDir: string) {
  const dir = path.join(dataDir, 'queue/mess');
  const c = { messages: 0, spamChecked: 0, spamUnchecked: 0, spamFlagged: 0, virusScanned: 0, virusUnchecked: 0, scores: [] as number[] };
  for (const name of readdirSync(dir)) {
    if (!/^[A-Z0-9]+$/.test(name)) continue;
    // The envelope is the JSON line near the file's end (before the #yubin-envelope trailer); the filters' headers are its prependHeaders.
    const text = readFileSync(path.join(dir, name), 'latin1');
    let head = '';
    try {
      const start = text.lastIndexOf('\n{"') + 1;
      const end = text.indexOf('\n', start);
      head = (JSON.parse(text.slice(start, end < 0 ? undefined : end)) as { prependHeaders?: string }).prependHeaders ?? '';
    } catch {
      head = text;
    }
    c.messages++;
    const status = /^X-Spam-Status: (.*)$/im.exec(head)?.[1];
    if (status !== undefined) {
      if (/^unchecked/i.test(status)) c.spamUnchecked++;
      else {
        c.spamChecked++;
        const score = /score=(-?[\d.]+)/.exec(status)?.[1];
        if (score !== undefined) c.scores.push(Number(score));
      }
    }
    if (/^X-Spam-Flag: YES/im.test(head)) c.spamFlagged++;
    const v = /^X-Virus-Scanned: (.*)$/im.exec(head)?.[1];
    if (v !== undefined) {
      if (/^unchecked/i.test(v)) c.virusUnchecked++;
      else c.virusScanned++;
    }
  }
  const scores = c.scores.sort((a, b) => a - b);
  return { messages: c.messages, spamChecked: c.spamChecked, spamUnchecked: c.spamUnchecked, spamFlagged: c.spamFlagged, virusScanned: c.virusScanned, virusUnchecked: c.virusUnchecked, spamScoreMin: scores[0], spamScoreMax: scores[scores.length - 1] };
}

// ---------------------------------------------------------------- the run

interface Options {
  small: number;
  large: number;
  warmup: number;
  messages: number;
  sessions: number;
  repeat: number;
  spamdChildren: number;
  seed: number;
  out?: string;
  keep: boolean;
  quick: boolean;
}

function parseArgs(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const o: Options = { small: quick ? 5 : 50, large: quick ? 3 : 15, warmup: quick ? 1 : 3, messages: quick ? 40 : 200, sessions: 4, repeat: quick ? 1 : 3, spamdChildren: 2, seed: 1, keep: false, quick };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => argv[++i];
    if (a === '--help' || a === '-h') {
      process.stdout.write(HELP);
      process.exit(0);
    } else if (a === '--quick') continue;
    else if (a === '--small') o.small = positive(v(), 'small', o.small);
    else if (a === '--large') o.large = positive(v(), 'large', o.large);
    else if (a === '--warmup') o.warmup = positive(v(), 'warmup', o.warmup);
    else if (a === '--messages') o.messages = positive(v(), 'messages', o.messages);
    else if (a === '--sessions') o.sessions = positive(v(), 'sessions', o.sessions);
    else if (a === '--repeat') o.repeat = positive(v(), 'repeat', o.repeat);
    else if (a === '--spamd-children') o.spamdChildren = positive(v(), 'spamd-children', o.spamdChildren);
    else if (a === '--seed') o.seed = positive(v(), 'seed', o.seed);
    else if (a === '--out') o.out = v();
    else if (a === '--keep') o.keep = true;
    else throw new Error(`unknown option ${a} (--help)`);
  }
  return o;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const root = repoRoot();
  const workdir = mkdtempSync(path.join(os.tmpdir(), 'yubin-content-'));
  // clamd drops to the clamav user and spamd to debian-spamd: they must reach their directories.
  sh('chmod', ['755', workdir]);
  const machine = machineInfo(workdir);
  const t00 = performance.now();
  const rand = prng(o.seed);
  let serial = 0;
  const yubinProblems: string[] = [];

  const spamd = await startSpamd(path.join(workdir, 'spamd'), o.spamdChildren);
  const clamd = await startClamd(path.join(workdir, 'clamd'));
  const dnsPort = await freePort(); // nothing listens there: no DNS query leaves the machine
  process.stderr.write(`spamd pid ${spamd.pid} on 127.0.0.1:${spamd.port}, clamd pid ${clamd.pid} on 127.0.0.1:${clamd.port}, run directory ${workdir}\n`);
  const versions = {
    spamd: sh('spamd', ['--version']).split('\n')[0] ?? '',
    clamd: sh('clamd', ['--version']),
  };

  let yubins = 0;
  const fresh = (config: Config): Promise<Yubin> => {
    const n = ++yubins;
    return startYubin(
      {
        dataDir: path.join(workdir, `yubin-${n}-${config}`),
        spamd: config === 'spamassassin' || config === 'both' ? spamd.port : undefined,
        clamd: config === 'clamav' || config === 'both' ? clamd.port : undefined,
        spamMaxSize: SPAM_MAX_SIZE,
        dnsPort,
      },
      path.join(workdir, `yubin-${n}-${config}.log`),
    );
  };
  const stopYubin = async (y: Yubin) => {
    await y.stop();
    yubinProblems.push(...yubinLogProblems(y.logFile).slice(0, 5));
  };

  // ------------------------------------------------ (a) latency
  const sizes = [
    { label: '5 KB', bytes: SMALL, n: o.small },
    { label: '500 KB', bytes: LARGE, n: o.large },
  ];
  const lat: Record<Config, Record<string, number[]>> = { none: {}, spamassassin: {}, clamav: {}, both: {} };
  const latSpool: Record<string, unknown> = {};
  const latCpu: Record<string, unknown> = {};
  for (const config of CONFIGS) {
    const y = await fresh(config);
    try {
      // Warm-up: JIT, spamd's children and clamd's first scans, both sizes, untimed.
      for (const s of sizes) for (let i = 0; i < o.warmup; i++) await send(y.port, cleanMessage(rand, ++serial, s.bytes));
      for (const s of sizes) {
        process.stderr.write(`latency: ${config}, ${s.n} x ${s.label}\n`);
        const cpu0 = { y: y.cpuS(), s: spamd.cpuS(), c: clamd.cpuS() };
        const samples: number[] = [];
        for (let i = 0; i < s.n; i++) {
          const m = cleanMessage(rand, ++serial, s.bytes);
          samples.push((await send(y.port, m)).endOfDataMs);
          await sleep(20);
        }
        lat[config][s.label] = samples;
        latCpu[`${config} ${s.label}`] = {
          yubinMsPerMsg: r1(((y.cpuS() - cpu0.y) * 1000) / s.n),
          spamdMsPerMsg: r1(((spamd.cpuS() - cpu0.s) * 1000) / s.n),
          clamdMsPerMsg: r1(((clamd.cpuS() - cpu0.c) * 1000) / s.n),
        };
      }
      latSpool[config] = spoolHeaders(y.dataDir);
    } finally {
      await stopYubin(y);
    }
  }

  // ------------------------------------------------ (b) throughput
  interface Tp {
    config: 'none' | 'both';
    msgsPerS: number;
    wallS: number;
    accepted: number;
    yubinMsPerMsg: number;
    spamdMsPerMsg: number;
    clamdMsPerMsg: number;
    clientCpuS: number;
    otherCpuS: number;
    yubinHwmMb: number;
    spool: ReturnType<typeof spoolHeaders>;
  }
  const tp: Tp[] = [];
  const tpWarm = 4;
  for (let rep = 1; rep <= o.repeat; rep++) {
    for (const config of (rep % 2 ? ['both', 'none'] : ['none', 'both']) as Array<'none' | 'both'>) {
      process.stderr.write(`throughput: run ${rep}/${o.repeat}, ${config}: ${o.messages} x 5 KB, ${o.sessions} sessions\n`);
      const y = await fresh(config);
      try {
        for (let i = 0; i < tpWarm; i++) await send(y.port, cleanMessage(rand, ++serial, SMALL));
        const messages = Array.from({ length: o.messages }, () => cleanMessage(rand, ++serial, SMALL));
        await sleep(500);
        const other = new OtherCpu(() => [y.pid, spamd.pid, clamd.pid]);
        const cpu0 = { y: y.cpuS(), s: spamd.cpuS(), c: clamd.cpuS(), b: process.cpuUsage() };
        other.start();
        let next = 0;
        let accepted = 0;
        const t0 = performance.now();
        await Promise.all(
          Array.from({ length: o.sessions }, async () => {
            for (;;) {
              const i = next++;
              if (i >= o.messages) return;
              await send(y.port, messages[i]!);
              accepted++;
            }
          }),
        );
        const wallS = (performance.now() - t0) / 1000;
        const b = process.cpuUsage(cpu0.b);
        const per = (s: number) => r1((s * 1000) / o.messages);
        tp.push({
          config,
          msgsPerS: r1(accepted / wallS),
          wallS: r2(wallS),
          accepted,
          yubinMsPerMsg: per(y.cpuS() - cpu0.y),
          spamdMsPerMsg: per(spamd.cpuS() - cpu0.s),
          clamdMsPerMsg: per(clamd.cpuS() - cpu0.c),
          clientCpuS: r2((b.user + b.system) / 1e6),
          otherCpuS: other.seconds(),
          yubinHwmMb: r1((readMemory(y.pid)?.hwmKb ?? 0) / 1024),
          spool: spoolHeaders(y.dataDir),
        });
        process.stderr.write(`  ${tp[tp.length - 1]!.msgsPerS} msgs/s\n`);
      } finally {
        await stopYubin(y);
      }
    }
  }

  // ------------------------------------------------ report
  const latency = CONFIGS.flatMap((config) =>
    sizes.map((s) => {
      const sm = summary(lat[config][s.label]!);
      const none = summary(lat.none[s.label]!);
      return { config, size: s.label, ...sm, addedP50: r2(sm.p50 - none.p50), addedP90: r2(sm.p90 - none.p90), cpu: latCpu[`${config} ${s.label}`] };
    }),
  );
  const med = (config: 'none' | 'both') => r1(median(tp.filter((t) => t.config === config).map((t) => t.msgsPerS)));
  const throughput = { none: med('none'), both: med('both'), ratioBothOverNone: r2(med('both') / med('none')) };

  const out: string[] = [];
  out.push('(a) final dot → 250, ms, one message at a time (a new connection per message, 1 recipient)');
  out.push(
    table([
      ['config', 'size', 'n', 'p50', 'p90', 'max', '+p50 vs none', '+p90 vs none', 'yubin CPU ms/msg', 'spamd CPU ms/msg', 'clamd CPU ms/msg'],
      ...latency.map((l) => {
        const c = l.cpu as { yubinMsPerMsg: number; spamdMsPerMsg: number; clamdMsPerMsg: number };
        return [l.config, l.size, String(l.n), String(l.p50), String(l.p90), String(l.max), l.config === 'none' ? '-' : String(l.addedP50), l.config === 'none' ? '-' : String(l.addedP90), String(c.yubinMsPerMsg), String(c.spamdMsPerMsg), String(c.clamdMsPerMsg)];
      }),
    ]),
  );
  out.push('', `what the filters wrote into the spooled messages (warm-up included): ${JSON.stringify(latSpool)}`);
  out.push('', `(b) ${o.messages} messages of 5 KB, ${o.sessions} sessions, a new connection per message, queue held; spamd -m ${o.spamdChildren}`);
  out.push(
    table([
      ['config', 'msgs/s', 'wall s', 'accepted', 'yubin CPU ms/msg', 'spamd CPU ms/msg', 'clamd CPU ms/msg', 'client CPU s', 'other CPU s', 'yubin VmHWM MB', 'spam checked', 'virus scanned'],
      ...tp.map((t) => [t.config, String(t.msgsPerS), String(t.wallS), String(t.accepted), String(t.yubinMsPerMsg), String(t.spamdMsPerMsg), String(t.clamdMsPerMsg), String(t.clientCpuS), String(t.otherCpuS), String(t.yubinHwmMb), String(t.spool.spamChecked), String(t.spool.virusScanned)]),
    ]),
  );
  out.push(`median msgs/s: both ${throughput.both}, none ${throughput.none}; both / none = ${throughput.ratioBothOverNone}`);
  if (yubinProblems.length) out.push('', `yubin log warnings/errors (first ones): ${yubinProblems.slice(0, 5).join('\n')}`);
  const totalS = r1((performance.now() - t00) / 1000);
  out.push('', `total ${totalS} s`);
  process.stdout.write(out.join('\n') + '\n');

  const date = new Date().toISOString().slice(0, 10);
  const file = o.out ?? path.join(root, 'bench/results', `content-${date}${o.quick ? '-quick' : ''}.json`);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(
    file,
    JSON.stringify(
      {
        benchmark: 'content',
        date: new Date().toISOString(),
        commit: commitOf(root),
        options: o,
        machine: { ...machine, loadAverageAtEnd: loadAverage() },
        totalSeconds: totalS,
        setup: {
          configs: { none: 'rcpthosts', spamassassin: `rcpthosts + spamassassin (maxSize ${SPAM_MAX_SIZE})`, clamav: 'rcpthosts + clamav (defaults)', both: `rcpthosts + spamassassin (maxSize ${SPAM_MAX_SIZE}) + clamav` },
          spamd: { version: versions.spamd, args: spamd.args },
          clamd: { version: versions.clamd, database: 'one .ndb signature (EICAR)' },
          yubin: 'one process, one listener, queue held (concurrencyLocal 0, concurrencyRemote 0), logLevel warn, DNS a closed loopback port',
          messages: 'plain-text English prose with ordinary mail headers, distinct per message (seeded PRNG); neither GTUBE nor EICAR',
          sizesBytes: { small: SMALL, large: LARGE },
        },
        latency: latency.map((l) => ({ ...l, samplesMs: lat[l.config][l.size]!.map(r2) })),
        latencySpool: latSpool,
        throughput: { runs: tp, median: throughput },
        yubinLogProblems: yubinProblems.slice(0, 20),
      },
      null,
      2,
    ) + '\n',
  );
  process.stderr.write(`wrote ${file}\n`);
  if (!o.keep) rmSync(workdir, { recursive: true, force: true });
}

await runBench('content', main, stopAll);
