/** The yubin command: exit codes, one-line errors, check-config output. */
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { ROOT, tempDir, yubin } from './helpers.js';

const pkg = (await import('node:fs')).readFileSync(path.join(ROOT, 'package.json'), 'utf8');
const version = (JSON.parse(pkg) as { version: string }).version;

t.test('--version, help, and usage errors', async (t) => {
  const v = await yubin(['--version']);
  t.equal(v.code, 0);
  t.equal(v.stdout.trim(), version);
  const help = await yubin(['help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /serve.*\n.*check-config/s);
  const unknown = await yubin(['frobnicate']);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /^yubin: error: unknown command 'frobnicate'/);
  const badOption = await yubin(['serve', '--bogus']);
  t.equal(badOption.code, 2);
  t.equal(badOption.stderr.trim().split('\n').length, 1, 'one line');
  t.match(badOption.stderr, /unknown option '--bogus'/);
  const none = await yubin([]);
  t.equal(none.code, 2, 'no command is a usage error');
});

t.test('check-config on the embedded default prints each listener and its plugins in order', async (t) => {
  const r = await yubin(['check-config']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /config .*config\/yubin\.yaml: ok/);
  t.match(r.stdout, /listener smtp: smtp on 127\.0\.0\.1:2525, tls none\n.*\n  1\. badmailfrom \[built-in\] hooks: mail, rcpt; options \{"addresses":\[\]\}\n  2\. rcpthosts \[built-in\] hooks: rcpt\n  3\. vpopmail \[built-in\] hooks: auth, mail, rcpt, deliver, verify\n/);
  t.match(r.stdout, /listener submission: smtp on 127\.0\.0\.1:2587, tls starttls, AUTH required\n.*\n  1\. vpopmail \[built-in\]/);
  t.match(r.stdout, /listener pop3: pop3 on 127\.0\.0\.1:2110, tls starttls, logins allowed without TLS\n  limits: line 4096 octets, idle 600 s \(30 s before login\), 100 connections \(20 per IP\), 3600 s each at most, 3 failed logins\n  1\. vpopmail/);
  t.match(r.stdout, /\nlistener http: http on 127\.0\.0\.1:2080, tls none\n  serves: metrics \(GET \/metrics, Prometheus text format\), webadmin \(plugin\)\n/);
  t.match(r.stdout, /\nqueue: concurrency local 10, remote 20, 10 per domain; lifetime 604800 s; retry qmail's schedule\ndelivery: remote mail to each domain's MX on port 25\n  1\. autorespond \[built-in\] hooks: deliver, verify\n  2\. vpopmail \[built-in\] hooks: auth, mail, rcpt, deliver, verify\n  3\. maildir \[built-in\] hooks: deliver, verify\n/);
});

t.test('config errors name the file, the line, the key and the reason, and exit 2', async (t) => {
  const dir = await tempDir(t);
  const L = 'listeners:\n  - { name: smtp, protocol: smtp, listen: "127.0.0.1:2525" }\n';
  const cases: Array<[string, string, RegExp]> = [
    ['unknown-plugin.yaml', 'listeners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:2525\n    plugins: [rcpthosts, no-such-plugin]\n', /unknown-plugin\.yaml:5: listeners\[0\]\(smtp\)\.plugins\[1\]: unknown plugin "no-such-plugin"/],
    ['bad-key.yaml', 'listeners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:2525\n    limits:\n      maxRecipients: -3\n', /bad-key\.yaml:6: listeners\[0\]\(smtp\)\.limits\.maxRecipients: .*/],
    ['typo.yaml', 'hostnme: x\nlisteners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:2525\n', /typo\.yaml:1: hostnme: Unrecognized key: "hostnme"/],
    ['listen.yaml', 'listeners:\n  - name: smtp\n    protocol: smtp\n    listen: "::1:25"\n', /listen\.yaml:4: listeners\[0\]\(smtp\)\.listen: expected HOST:PORT, with an IPv6 address in brackets/],
    ['protocol.yaml', 'listeners:\n  - name: smtp\n    protocol: imap\n    listen: 127.0.0.1:2525\n', /protocol\.yaml:3: listeners\[0\]\(smtp\)\.protocol: /],
    ['size.yaml', 'listeners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:2525\n    limits: { maxMessageSize: 10 parsecs }\n', /size\.yaml:5: listeners\[0\]\(smtp\)\.limits\.maxMessageSize: not a size/],
    ['yaml-syntax.yaml', 'listeners:\n  - name: [unclosed\n', /yaml-syntax\.yaml:\d+: YAML syntax: /],
    ['plugin-option.yaml', 'plugins:\n  rcpthosts:\n    domainz: [a.example]\nlisteners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:2525\n    plugins: [rcpthosts]\n', /plugin-option\.yaml:3: plugins\.rcpthosts\.domainz: Unrecognized key: "domainz"/],
    ['plugin-file.yaml', 'plugins:\n  tcprules: { file: ./missing.tcp }\nlisteners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:2525\n    plugins: [tcprules]\n', /plugin-file\.yaml:7: listeners\[0\]\(smtp\)\.plugins\[0\]: plugin tcprules could not start: cannot read .*missing\.tcp: ENOENT/],
    ['queue.yaml', `queue:\n  concurrencyRemote: -1\n${L}`, /queue\.yaml:2: queue\.concurrencyRemote: /],
    ['retry.yaml', `queue:\n  retry: [5m, soon]\n${L}`, /retry\.yaml:2: queue\.retry\[1\]: not a duration/],
    ['smarthost.yaml', `delivery:\n  smarthost: { port: 25 }\n${L}`, /smarthost\.yaml:2: delivery\.smarthost\.host: /],
    ['deliver-plugin.yaml', `delivery:\n  plugins: [maildirr]\n${L}`, /deliver-plugin\.yaml:2: delivery\.plugins\[0\]: unknown plugin "maildirr"/],
    ['dns.yaml', `dns:\n  servers: [dns.example]\n${L}`, /dns\.yaml:2: dns\.servers\[0\]: expected an IP address/],
    ['dup.yaml', 'listeners:\n  - { name: a, protocol: smtp, listen: "127.0.0.1:2525" }\n  - { name: a, protocol: smtp, listen: "127.0.0.1:2525" }\n', /listener name a is used twice/],
  ];
  for (const [name, text, expected] of cases) {
    await writeFile(path.join(dir, name), text);
    const r = await yubin(['check-config', '--config', path.join(dir, name)]);
    t.equal(r.code, 2, `${name}: exit 2`);
    t.match(r.stderr, expected, `${name}: ${r.stderr.trim()}`);
    t.equal(r.stdout, '', `${name}: nothing on stdout`);
    const serve = await yubin(['serve', '--config', path.join(dir, name)]);
    t.equal(serve.code, 2, `${name}: serve refuses it too`);
  }
  const missing = await yubin(['check-config', '--config', path.join(dir, 'nope.yaml')]);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /nope\.yaml: cannot read: ENOENT/);
});

t.test('a runtime failure (port taken) exits 1 with one line', async (t) => {
  const dir = await tempDir(t);
  const blocker = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => blocker.once('listening', r));
  t.teardown(() => blocker.close());
  const port = (blocker.address() as net.AddressInfo).port;
  const file = path.join(dir, 'y.yaml');
  await writeFile(file, `dataDir: ./var\nlisteners:\n  - { name: smtp, protocol: smtp, listen: "127.0.0.1:${port}" }\n`);
  const r = await yubin(['serve', '--config', file], { env: { YUBIN_LOG_FORMAT: 'json' } });
  t.equal(r.code, 1);
  t.match(r.stderr, /^yubin: listen EADDRINUSE: address already in use 127\.0\.0\.1:\d+\n$/);
});
