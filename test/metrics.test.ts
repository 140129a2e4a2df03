/**
 * The http listener and its Prometheus metrics, against the real thing:
 * `yubin serve` with smtp, pop3 and http listeners, swaks and curl as
 * clients, a loopback DNS server behind rblsmtpd, promtool to check the
 * exposition, and counters compared before and after a known set of actions.
 */
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { writeFile } from 'node:fs/promises';
import t, { type Test } from 'tap';
import { parseConfig } from '../core/config/load.js';
import { Tokens } from '../core/services/index.js';
import { SmtpTestClient, startTestServer } from '../core/testing/index.js';
import { needs, run, serve, sleep, tempDir } from './helpers.js';
import { startDnsServer } from './peers/dns.js';

type Samples = Map<string, number>;

/** `name{a="1",b="2"} value` lines into a map keyed by name and sorted labels. */
function parse(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels = [...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map(([, k, v]) => `${k}=${v}`).sort();
    out.set(key(m[1]!, labels), Number(m[3]));
  }
  return out;
}

function key(name: string, labels: readonly string[] = []): string {
  return labels.length ? `${name}{${[...labels].sort().join(',')}}` : name;
}

/** The series of our own counters and histogram counts (not the process figures, not buckets or sums, which move with time). */
function ours(samples: Samples): Samples {
  return new Map([...samples].filter(([k]) => k.startsWith('yubin_') && !/^yubin_(process|nodejs)_/.test(k) && !/_(bucket|sum)[{]?/.test(k.split('{')[0]!)));
}

/** What moved between two scrapes, series by series. */
function delta(before: Samples, after: Samples): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of after) {
    const d = v - (before.get(k) ?? 0);
    if (d !== 0) out[k] = d;
  }
  for (const k of before.keys()) if (!after.has(k)) out[k] = Number.NaN;
  return out;
}

async function scrape(t: Test, port: number, pathName = '/metrics'): Promise<{ status: number; contentType: string; body: string }> {
  const r = await run('curl', ['-s', '-w', '\n%{http_code} %{content_type}', `http://127.0.0.1:${port}${pathName}`]);
  t.equal(r.code, 0, `curl ${pathName}`);
  const cut = r.stdout.lastIndexOf('\n');
  const [status, ...type] = r.stdout.slice(cut + 1).split(' ');
  return { status: Number(status), contentType: type.join(' '), body: r.stdout.slice(0, cut) };
}

async function promtool(t: Test, body: string, what: string): Promise<void> {
  const r = await run('promtool', ['check', 'metrics'], { input: body });
  t.equal(r.code, 0, `promtool check metrics passes ${what}: ${r.stdout}${r.stderr}`);
}

/** Opens a POP3 connection and resolves with its first line (the greeting or the refusal). */
function pop3Connect(port: number): Promise<{ socket: net.Socket; first: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let buf = '';
    socket.on('error', reject);
    socket.on('data', (d: Buffer) => {
      buf += d.toString();
      const i = buf.indexOf('\r\n');
      if (i >= 0) resolve({ socket, first: buf.slice(0, i) });
    });
  });
}

t.test('yubin serve: /metrics moves by exactly what swaks and curl did, and promtool accepts it', needs('promtool', 'curl', 'swaks'), async (t) => {
  const dir = await tempDir(t);
  const dns = await startDnsServer({});
  t.teardown(() => dns.close());
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(
    config,
    [
      'dataDir: ./var',
      'hostname: mx.test',
      'localDomains: [localhost]',
      // rblsmtpd asks the loopback DNS server (NXDOMAIN for everything): one miss, then a cached answer.
      `dns: { servers: ["${dns.address}"], timeout: 1s, tries: 1 }`,
      // The first failed login locks the account and the IP out: one lockout per count, then a refusal.
      'loginThrottle: { lockoutAfter: 1 }',
      'plugins:',
      '  rblsmtpd: { zones: [bl.test] }',
      '  vpopmail: {}',
      'delivery: { plugins: [maildir] }',
      'listeners:',
      '  - { name: smtp, protocol: smtp, listen: "127.0.0.1:0", plugins: [rblsmtpd, rcpthosts] }',
      '  - { name: pop3, protocol: pop3, listen: "127.0.0.1:0", allowInsecureAuth: true, limits: { maxConnectionsPerIp: 1 }, plugins: [vpopmail] }',
      '  - { name: web, protocol: http, listen: "127.0.0.1:0", serve: [metrics] }',
      '',
    ].join('\n'),
  );
  const server = await serve(t, config, 3);
  const { smtp, pop3, web } = server.ports as Record<string, number>;
  t.ok(web, 'the http listener logs its port like the others');
  t.match(server.logs.find((l) => l.event === 'listen' && l.listener === 'web'), { protocol: 'http', address: '127.0.0.1', tls: 'none', serve: ['metrics'] });

  const first = await scrape(t, web);
  t.equal(first.status, 200);
  t.equal(first.contentType, 'text/plain; version=0.0.4; charset=utf-8', "the registry's content type");
  await promtool(t, first.body, 'before');
  const before = parse(first.body);
  t.ok(before.has('yubin_process_cpu_user_seconds_total'), 'process figures are there');
  t.ok(before.has('yubin_nodejs_eventloop_lag_seconds'), 'and the event loop lag');
  t.equal(before.get(key('yubin_connections_total', ['listener=smtp', 'outcome=accepted'])), 0, 'a listener counts from 0 before its first connection');
  t.equal(before.get(key('yubin_messages_total', ['listener=smtp', 'result=accepted'])), 0);

  // 1. A message accepted and delivered locally.
  const ok = await run('swaks', ['--server', `127.0.0.1:${smtp}`, '--to', 'postmaster@localhost', '--from', 'someone@example.net']);
  t.equal(ok.code, 0, 'swaks: accepted');
  const id = /queued as (\w+)/.exec(ok.stdout)![1]!;
  await server.waitLog((l) => l.event === 'delivery' && l.id === id);
  // 2. Relaying refused at RCPT.
  const relay = await run('swaks', ['--server', `127.0.0.1:${smtp}`, '--to', 'someone@example.com', '--from', 'someone@example.net']);
  t.match(relay.stdout, /<\*\* 553 5\.7\.1/, 'swaks: relaying refused');
  // 3. A failed POP3 login, then one refused by the lockout it started.
  const bad = await run('curl', ['-s', '-u', 'nobody@localhost:wrong', `pop3://127.0.0.1:${pop3}/`]);
  t.not(bad.code, 0, 'curl: login failed');
  const locked = await run('curl', ['-s', '-v', '-u', 'nobody@localhost:wrong', `pop3://127.0.0.1:${pop3}/`]);
  t.match(locked.stderr, /-ERR \[SYS\/TEMP\] Too many failed logins/, 'curl: locked out');
  // 4. A second POP3 connection from the same IP while one is open (maxConnectionsPerIp 1).
  await server.waitLog(() => server.logs.filter((l) => l.event === 'close' && l.listener === 'pop3').length >= 2);
  const open = await pop3Connect(pop3);
  t.match(open.first, /^\+OK/);
  const second = await pop3Connect(pop3);
  t.match(second.first, /^-ERR \[SYS\/TEMP\] too many connections from your IP address \(1\)/);
  second.socket.destroy();
  open.socket.destroy();
  await server.waitLog(() => server.logs.filter((l) => l.event === 'close' && l.listener === 'pop3').length >= 4);

  const last = await scrape(t, web);
  await promtool(t, last.body, 'after');
  const after = parse(last.body);
  const moved = delta(ours(before), ours(after));
  t.same(
    moved,
    {
      [key('yubin_connections_total', ['listener=smtp', 'outcome=accepted'])]: 2,
      [key('yubin_connections_total', ['listener=pop3', 'outcome=accepted'])]: 3,
      [key('yubin_connections_total', ['listener=pop3', 'outcome=too-many'])]: 1,
      [key('yubin_messages_total', ['listener=smtp', 'result=accepted'])]: 1,
      [key('yubin_recipients_total', ['listener=smtp', 'result=accepted'])]: 1,
      [key('yubin_recipients_total', ['listener=smtp', 'result=refused'])]: 1,
      [key('yubin_hook_decisions_total', ['hook=mail', 'plugin=core', 'action=accept'])]: 2,
      [key('yubin_hook_decisions_total', ['hook=rcpt', 'plugin=core', 'action=accept'])]: 1,
      [key('yubin_hook_decisions_total', ['hook=queue', 'plugin=core', 'action=accept'])]: 1,
      [key('yubin_hook_decisions_total', ['hook=rcpt', 'plugin=rcpthosts', 'action=reject'])]: 1,
      [key('yubin_hook_decisions_total', ['hook=auth', 'plugin=core', 'action=reject'])]: 1,
      [key('yubin_hook_decisions_total', ['hook=auth', 'plugin=core', 'action=defer'])]: 1,
      [key('yubin_hook_decisions_total', ['hook=connect', 'plugin=core', 'action=disconnect'])]: 1,
      [key('yubin_hook_duration_seconds_count', ['hook=connect', 'plugin=rblsmtpd'])]: 2,
      [key('yubin_hook_duration_seconds_count', ['hook=rcpt', 'plugin=rblsmtpd'])]: 2,
      [key('yubin_hook_duration_seconds_count', ['hook=rcpt', 'plugin=rcpthosts'])]: 2,
      [key('yubin_hook_duration_seconds_count', ['hook=verify', 'plugin=maildir'])]: 1,
      [key('yubin_hook_duration_seconds_count', ['hook=deliver', 'plugin=maildir'])]: 1,
      [key('yubin_hook_duration_seconds_count', ['hook=auth', 'plugin=vpopmail'])]: 1,
      [key('yubin_deliveries_total', ['channel=local', 'result=success'])]: 1,
      [key('yubin_delivery_attempt_duration_seconds_count', ['channel=local'])]: 1,
      [key('yubin_delivery_delay_seconds_count', ['channel=local'])]: 1,
      yubin_dns_cache_misses_total: 1,
      yubin_dns_cache_hits_total: 1,
      yubin_dns_cache_entries: 1,
      [key('yubin_login_lockouts_total', ['by=ip'])]: 1,
      [key('yubin_login_lockouts_total', ['by=account'])]: 1,
      [key('yubin_login_lockouts_total', ['by=ip+account'])]: 1,
      [key('yubin_login_locked_refusals_total', ['by=ip'])]: 1,
    },
    'every counter moved by what the test did, and nothing else moved',
  );
  t.equal(dns.queries.length, 1, 'the DNS server was asked once');
  for (const state of ['ready', 'deferred', 'held', 'active']) t.equal(after.get(key('yubin_queue_messages', [`state=${state}`])), 0, `queue: no ${state} message left`);
  for (const channel of ['local', 'remote']) for (const state of ['waiting', 'running']) t.equal(after.get(key('yubin_queue_deliveries', [`channel=${channel}`, `state=${state}`])), 0);

  // The decision counter mirrors the log's decision lines (hook, plugin, action), one for one.
  await sleep(200);
  const fromLog: Record<string, number> = {};
  for (const l of server.logs) {
    if (typeof l.hook !== 'string' || typeof l.action !== 'string') continue;
    const k = key('yubin_hook_decisions_total', [`hook=${l.hook}`, `plugin=${l.plugin as string}`, `action=${l.action}`]);
    fromLog[k] = (fromLog[k] ?? 0) + 1;
  }
  t.same(Object.fromEntries(Object.entries(moved).filter(([k]) => k.startsWith('yubin_hook_decisions_total'))), fromLog);

  const notFound = await scrape(t, web, '/nope');
  t.equal(notFound.status, 404, 'an unknown path is 404');
  t.equal((await scrape(t, web, '/')).status, 404);

  // SIGHUP with the same config: the http listener stays, the counts go on.
  server.child.kill('SIGHUP');
  await server.waitLog((l) => l.event === 'reload' && l.level === 30);
  const reloaded = parse((await scrape(t, web)).body);
  t.equal(reloaded.get(key('yubin_messages_total', ['listener=smtp', 'result=accepted'])), 1, 'the counts survive a reload');
  t.equal(await server.stop(), 0);
});

t.test('implicit TLS failures, the held queue and HTTPS, in one process', async (t) => {
  const s = await startTestServer({
    listeners: [
      { name: 'smtp', plugins: ['rcpthosts'] },
      { name: 'smtps', tls: 'implicit' },
      { name: 'pop3s', protocol: 'pop3', tls: 'implicit' },
      { name: 'web', protocol: 'http', tls: 'implicit', serve: ['metrics'] },
    ],
  });
  t.teardown(() => s.close());
  const metrics = s.server.services.resolve(Tokens.Metrics);
  const value = async (name: string, labels: string[] = []) => parse(await metrics.registry.metrics()).get(key(name, labels));

  const c = await s.connect({ listener: 'smtp' });
  await c.ehlo();
  t.equal((await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: held\r\n\r\nx\r\n' })).data?.code, 250);
  await c.quit();
  for (let i = 0; i < 100 && (await value('yubin_queue_messages', ['state=held'])) !== 1; i++) await sleep(20);
  t.equal(await value('yubin_queue_messages', ['state=held']), 1, 'a message on a held queue (concurrency 0) is counted held');

  // Clear text where a TLS handshake is expected.
  for (const name of ['smtps', 'pop3s']) {
    const socket = net.connect(s.ports[name]!, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.write('EHLO client.example.test\r\n');
    await new Promise((r) => socket.once('close', r));
  }
  for (let i = 0; i < 100 && ((await value('yubin_connections_total', ['listener=smtps', 'outcome=tls-failed'])) !== 1 || (await value('yubin_connections_total', ['listener=pop3s', 'outcome=tls-failed'])) !== 1); i++) await sleep(20);
  t.equal(await value('yubin_connections_total', ['listener=smtps', 'outcome=tls-failed']), 1, 'smtps: a failed handshake');
  t.equal(await value('yubin_connections_total', ['listener=pop3s', 'outcome=tls-failed']), 1, 'pop3s: a failed handshake');
  t.equal(await value('yubin_connections_total', ['listener=smtps', 'outcome=accepted']), 0);

  // HTTPS with the generated self-signed certificate.
  const body = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port: s.ports.web, path: '/metrics', rejectUnauthorized: false }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      })
      .on('error', reject);
  });
  t.equal(body.status, 200, 'tls: implicit serves HTTPS');
  t.match(body.text, /^yubin_messages_total\{listener="smtp",result="accepted"\} 1$/m);
  t.notMatch(body.text, /yubin_messages_total\{listener="pop3s"/, 'no message counters for a pop3 listener');
});

t.test('two servers in one process keep their own counts', async (t) => {
  const a = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => a.close());
  const b = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => b.close());
  const c = await a.connect();
  await c.ehlo();
  await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: one\r\n\r\nx\r\n' });
  await c.quit();
  const count = async (s: typeof a) => parse(await s.server.services.resolve(Tokens.Metrics).registry.metrics()).get(key('yubin_messages_total', ['listener=smtp', 'result=accepted']));
  t.equal(await count(a), 1);
  t.equal(await count(b), 0);
  t.not(a.server.services.resolve(Tokens.Metrics).registry, b.server.services.resolve(Tokens.Metrics).registry);
});

t.test('an http listener: config errors that say what is wrong', async (t) => {
  const L = (extra: string) => `listeners:\n  - { name: smtp, protocol: smtp, listen: "127.0.0.1:25" }\n  - { name: web, protocol: http, listen: "127.0.0.1:2080"${extra} }\n`;
  const problems = (text: string) => {
    try {
      parseConfig(text, '/etc/yubin/yubin.yaml');
      return '';
    } catch (err) {
      return (err as Error).message;
    }
  };
  t.equal(problems(L(', serve: [metrics]')), '', 'a valid one');
  t.match(problems(L(', serve: [metrics], tls: starttls')), /listeners\[1\]\(web\)\.tls: an http listener has no STARTTLS: use tls: implicit \(HTTPS\) or none/);
  t.match(problems(L(', serve: [metrics], plugins: [rcpthosts]')), /listeners\[1\]\(web\)\.plugins: an http listener has no plugins: that is for smtp and pop3 listeners/);
  t.match(problems(L(', serve: [metrics], limits: { maxConnections: 5 }')), /listeners\[1\]\(web\)\.limits: an http listener has no limits/);
  t.match(problems(L(', serve: []')), /listeners\[1\]\(web\)\.serve: name what the listener serves, e.g. serve: \[metrics\]/);
  t.match(problems(L('')), /listeners\[1\]\(web\)\.serve: /);
  t.equal(problems(L(', serve: [webmail]')), '', 'another name is a plugin, checked when plugins load (test/http-services)');
  t.match(problems(L(', serve: [metrics, metrics]')), /serve\[1\]: metrics is listed twice/);
  t.match(problems(L(', serve: [metrics], cert: a.pem')), /cert and key go together/);
  t.match(problems('listeners:\n  - { name: x, protocol: imap, listen: "127.0.0.1:25" }\n'), /listeners\[0\]\(x\)\.protocol: .*'smtp' \| 'pop3' \| 'http'/);
});
