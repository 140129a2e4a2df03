/**
 * `log.syslog` end to end: `yubin serve` (in Asia/Tokyo) sends its log to a
 * real rsyslogd, which listens on a socket in a temporary directory (never
 * /dev/log) and writes mail.* to a file there; swaks drives real SMTP.
 *
 * rsyslogd runs in UTC and is told to keep the time each message carries
 * (IgnoreTimestamp and UseSysTimeStamp off): the times in its file are the
 * ones yubin's side wrote, in yubin's local time zone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { SyslogFormatter } from '../core/syslog/format.js';
import { needs, run, serve, sleep, tempDir, type ServeProcess } from './helpers.js';

const TOKYO = 'Asia/Tokyo';

interface Rsyslog {
  readonly socket: string;
  /** mail.* in rsyslog's traditional format. */
  readonly mailLog: string;
  /** Everything, with severity and facility first. */
  readonly allLog: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** An rsyslogd of our own: imuxsock on DIR/log.sock only (SysSock off), files in DIR. */
async function rsyslog(t: Test, dir: string): Promise<Rsyslog> {
  const socket = path.join(dir, 'log.sock');
  const mailLog = path.join(dir, 'mail.log');
  const allLog = path.join(dir, 'all.log');
  const conf = path.join(dir, 'rsyslog.conf');
  const pidFile = path.join(dir, 'rsyslogd.pid');
  await writeFile(
    conf,
    [
      `global(workDirectory="${dir}")`,
      'module(load="imuxsock" SysSock.Use="off")',
      `input(type="imuxsock" Socket="${socket}" IgnoreTimestamp="off" UseSysTimeStamp="off" RateLimit.Interval="0")`,
      'template(name="withSeverity" type="string" string="%syslogseverity-text% %syslogfacility-text% %TIMESTAMP% %syslogtag%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\\n")',
      `mail.* action(type="omfile" file="${mailLog}" template="RSYSLOG_TraditionalFileFormat")`,
      `*.* action(type="omfile" file="${allLog}" template="withSeverity")`,
      '',
    ].join('\n'),
  );
  let child: ChildProcess | undefined;
  let exited: Promise<unknown> = Promise.resolve();
  const r: Rsyslog = {
    socket,
    mailLog,
    allLog,
    async start() {
      child = spawn('rsyslogd', ['-n', '-f', conf, '-i', pidFile], { env: { ...process.env, TZ: 'UTC' }, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const c = child;
      exited = new Promise((resolve) => c.on('exit', resolve));
      for (let i = 0; i < 100 && !existsSync(socket); i++) {
        if (c.exitCode !== null) throw new Error(`rsyslogd exited: ${stderr}`);
        await sleep(50);
      }
      if (!existsSync(socket)) throw new Error(`rsyslogd made no socket: ${stderr}`);
    },
    async stop() {
      // By its PID, the one we started.
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      child = undefined;
    },
  };
  t.teardown(() => r.stop());
  return r;
}

interface SyslogLine {
  readonly stamp: string;
  readonly tag: string;
  readonly pid: number;
  readonly message: string;
}

/** `Dec  4 09:20:14 host yubin[4242]: message` */
function parse(line: string): SyslogLine | undefined {
  const m = /^([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) \S+ ([^[:\s]+)\[(\d+)\]: (.*)$/.exec(line);
  return m ? { stamp: m[1]!, tag: m[2]!, pid: Number(m[3]), message: m[4]! } : undefined;
}

function lines(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

async function until<T>(what: string, get: () => T | undefined, timeout = 20_000): Promise<T> {
  const end = Date.now() + timeout;
  for (;;) {
    const v = get();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** syslog's `Mmm dd hh:mm:ss` for this instant in that time zone, independent of this process's TZ. */
function stampIn(timeZone: string, ms: number): string {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-US', { timeZone, month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' })
      .formatToParts(new Date(ms))
      .map((p) => [p.type, p.value]),
  );
  return `${parts.month} ${String(parts.day).padStart(2, ' ')} ${parts.hour}:${parts.minute}:${parts.second}`;
}

function configYaml(dir: string, socket: string): string {
  return [
    'dataDir: ./var',
    'localDomains: [localhost]',
    `log: { syslog: { socket: ${JSON.stringify(socket)} } }`,
    'delivery: { plugins: [maildir] }',
    'listeners:',
    '  - { name: mx, protocol: smtp, listen: "127.0.0.1:0", plugins: [rcpthosts] }',
    '',
  ].join('\n');
}

function swaks(server: ServeProcess, to: string) {
  return run('swaks', ['--server', `127.0.0.1:${server.ports.mx}`, '--from', 'a@example.org', '--to', to, '--timeout', '20']);
}

t.test('yubin serve with log.syslog: readable sentences in rsyslog, in local time, stdout unchanged', needs('rsyslogd', 'logger', 'swaks'), async (t) => {
  const dir = await tempDir(t, 'yubin-syslog-');
  const rs = await rsyslog(t, dir);
  await rs.start();
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(config, configYaml(dir, rs.socket));
  const server = await serve(t, config, 1, ['env', `TZ=${TOKYO}`]);

  const ok = await swaks(server, 'postmaster@localhost');
  t.equal(ok.code, 0, 'the accepted message');
  const id = /queued as (\w+)/.exec(ok.stdout)![1]!;
  await server.waitLog((l) => l.event === 'delivery' && l.id === id);
  const refused = await swaks(server, 'b@example.jp');
  t.match(refused.stdout, /<\*\* 553 5\.7\.1 sorry, that domain isn't in my list of allowed rcpthosts/, 'the refused one');
  await server.waitLog((l) => l.hook === 'rcpt' && l.action === 'reject' && l.rcpt === 'b@example.jp');
  await server.waitLog((l) => l.event === 'close' && server.logs.filter((x) => x.event === 'close').length >= 2);

  // A failed reload logs at error level: syslog severity err.
  await writeFile(config, 'listeners: [this is not valid\n');
  server.child.kill('SIGHUP');
  await server.waitLog((l) => l.event === 'reload' && l.level === 50);
  t.equal(await server.stop(), 0, 'stops cleanly');

  // Every line pino wrote on stdout is still its JSON line.
  t.notOk(server.logs.some((l) => 'raw' in l), 'stdout is all JSON');
  t.same(Object.keys(server.logs[0]!).slice(0, 3), ['level', 'time', 'pid']);

  // The file holds exactly the sentences of the records on stdout, in order, the last (stopped) one too.
  const f = new SyslogFormatter();
  const expected = server.logs.map((rec) => ({ rec, text: f.format(rec) })).filter((x) => x.text !== undefined);
  const got = await until('the stopped line in the mail log', () => {
    const parsed = lines(rs.mailLog).map(parse);
    return parsed.length >= expected.length ? parsed : undefined;
  });
  t.same(got.map((l) => l?.message), expected.map((x) => x.text), 'one sentence per record, as the formatter makes them');
  t.ok(got.every((l) => l?.tag === 'yubin' && l.pid === server.child.pid), 'tag yubin, PID of the server');

  const text = got.map((l) => l!.message).join('\n');
  t.match(text, new RegExp(`^mx\\[\\w+\\]: connection from 127\\.0\\.0\\.1 port \\d+ to 127\\.0\\.0\\.1:${server.ports.mx}$`, 'm'));
  t.match(text, new RegExp(`^mx\\[\\w+\\]: 127\\.0\\.0\\.1 sender <a@example\\.org> accepted \\(message ${id}\\)$`, 'm'));
  t.match(text, /^mx\[\w+\]: 127\.0\.0\.1 recipient <postmaster@localhost> accepted$/m);
  t.match(text, new RegExp(`^mx\\[\\w+\\]: 127\\.0\\.0\\.1 message ${id} queued: from=<a@example\\.org>, to=<postmaster@localhost>, \\d+ bytes$`, 'm'));
  t.match(text, new RegExp(`^queue: message ${id} to postmaster@localhost delivered: maildir: delivered to localhost/postmaster/Maildir/new/\\S+$`, 'm'));
  t.match(text, /^mx\[\w+\]: 127\.0\.0\.1 refused at RCPT by rcpthosts: 553 5\.7\.1 sorry, that domain isn't in my list of allowed rcpthosts \(#5\.7\.1\) \(from=<a@example\.org> to=<b@example\.jp>\)$/m);
  t.match(text, /^reload failed, keeping the running configuration \(error=.+\)$/m);
  t.match(text, /^stopped$/m);

  // The time of each line is the moment yubin logged it, in Tokyo: rsyslog (in UTC) kept it as sent.
  for (const [i, line] of got.entries()) {
    const at = Date.parse(expected[i]!.rec.time as string);
    const near = [-1, 0, 1, 2, 3].map((s) => stampIn(TOKYO, at + s * 1000));
    if (!near.includes(line!.stamp)) {
      t.fail(`line ${i} stamped ${line!.stamp}, logged at ${stampIn(TOKYO, at)} Tokyo time (${stampIn('UTC', at)} UTC)`);
      break;
    }
  }
  t.pass('every line stamped with Tokyo local time');
  t.not(stampIn(TOKYO, Date.now()), stampIn('UTC', Date.now()), 'and Tokyo time is not UTC');

  // Facility mail, severity from the pino level.
  const all = lines(rs.allLog).filter((l) => / yubin\[/.test(l));
  t.ok(all.length >= expected.length);
  t.ok(all.every((l) => / mail /.test(l)), 'facility mail');
  t.ok(all.some((l) => /^info mail .* yubin\[\d+\]: queue: message \w+ to postmaster@localhost delivered/.test(l)), 'info');
  t.ok(all.some((l) => /^err mail .* yubin\[\d+\]: reload failed/.test(l)), 'error is err');
});

t.test('no syslog at start, or gone later: one warning on stderr each time, the server serves on, lines flow again when it is back', needs('rsyslogd', 'logger', 'swaks'), async (t) => {
  const dir = await tempDir(t, 'yubin-syslog-');
  const rs = await rsyslog(t, dir);
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(config, configYaml(dir, rs.socket));
  const server = await serve(t, config, 1);
  // From the server's start: logger may fail on the missing socket before the server is ready.
  const said = () => server.stderr().split('\n').filter((l) => l.startsWith('yubin: syslog: '));

  await until('the warning', () => said().length >= 1);
  t.match(said()[0], /^yubin: syslog: logger: socket .*log\.sock: No such file or directory; the server goes on/, 'said on stderr');
  t.equal((await swaks(server, 'postmaster@localhost')).code, 0, 'mail is taken without syslog');
  await sleep(1_500);
  t.equal(said().length, 1, 'said once, not at each retry');

  await rs.start();
  await until('syslog taken up again', () => said().length >= 2);
  t.match(said()[1], /^yubin: syslog: writing to .*log\.sock again; \d+ lines were dropped while it was out$/);
  t.equal((await swaks(server, 'postmaster@localhost')).code, 0);
  await until('the second session in the mail log', () => lines(rs.mailLog).some((l) => /recipient <postmaster@localhost> accepted/.test(l)));
  t.match(readFileSync(rs.mailLog, 'utf8'), /yubin\[\d+\]: syslog: \d+ lines were dropped while .*log\.sock could not be written/, 'the loss is in syslog too');

  // rsyslogd stops under a running server, then comes back (its socket made anew).
  await rs.stop();
  t.equal((await swaks(server, 'postmaster@localhost')).code, 0, 'mail is taken while syslog is gone');
  await until('the second warning', () => said().length >= 3);
  t.match(said()[2], /^yubin: syslog: .*; the server goes on/);
  await rs.start();
  await until('syslog taken up again', () => said().length >= 4);
  const before = lines(rs.mailLog).length;
  t.equal((await swaks(server, 'postmaster@localhost')).code, 0);
  await until('new lines after the restart', () => lines(rs.mailLog).slice(before).some((l) => /message \w+ queued/.test(l)));
  t.equal(said().length, 4, 'two outages, two warnings, two recoveries');
  t.equal(await server.stop(), 0);
});
