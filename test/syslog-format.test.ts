/**
 * The syslog sentences: pino records, as the server writes them, made into
 * one readable line each. The SMTP lines come from a real session; the queue
 * and POP3 lines are the records scheduler.ts and pop3/ write, as a server
 * run logged them.
 */
import t from 'tap';
import { answer, definePlugin } from '../core/index.js';
import { parseConfig } from '../core/config/load.js';
import { startTestServer } from '../core/testing/index.js';
import { MAX_SENTENCE, priority, SEVERITY, severityOf, SyslogFormatter, syslogTime, type LogRecord } from '../core/syslog/format.js';

const base = { level: 30, time: '2026-12-04T00:32:05.916Z', pid: 21188 };

/** Each record's sentence, in order (undefined ones left out). */
function sentences(records: readonly LogRecord[], f = new SyslogFormatter()): string[] {
  return records.map((r) => f.format(r)).filter((s): s is string => s !== undefined);
}

/** Refuses b@example.jp at RCPT as a DNSBL would, and any message whose subject says so at DATA. */
const gate = definePlugin({
  name: 'rblsmtpd',
  setup: () => ({
    hooks: {
      rcpt: ({ recipient }) => (recipient.address === 'b@example.jp' ? answer.defer(451, '4.7.1', 'listed in bl.example.net') : answer.accept()),
      data: ({ message }) => (/refuse me/.test(message.header('subject')[0] ?? '') ? answer.reject(554, '5.7.1', 'content refused') : { action: 'continue' as const }),
    },
  }),
});

t.test('an SMTP session: connect, MAIL, RCPT accepted and refused, queued, a refusal at DATA, close', async (t) => {
  const s = await startTestServer({ plugins: [gate], config: { localDomains: ['localhost', 'example.jp'] } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  const sent = await c.mail({ from: 'a@example.org', to: ['bob@example.jp', 'b@example.jp'], data: 'Subject: hi\n\nhello\n' });
  t.equal(sent.data?.code, 250);
  const refused = await c.mail({ from: '', to: ['carol@example.jp', 'dave@example.jp'], data: 'Subject: refuse me\n\nno\n' });
  t.equal(refused.data?.code, 554);
  await c.quit();
  await new Promise((r) => setTimeout(r, 100));
  const id = /queued as (\w+)/.exec(sent.data!.text)![1]!;
  const session = s.logs.filter((l) => typeof l.conn === 'string');
  const conn = session[0]!.conn as string;
  const lines = sentences(session);
  const p = `smtp[${conn}]: `;
  t.match(lines[0], new RegExp(`^${escape(p)}connection from 127\\.0\\.0\\.1 port \\d+ to 127\\.0\\.0\\.1:${s.port}$`));
  t.equal(lines[1], `${p}127.0.0.1 sender <a@example.org> accepted (message ${id})`);
  t.equal(lines[2], `${p}127.0.0.1 recipient <bob@example.jp> accepted by rblsmtpd`);
  t.equal(lines[3], `${p}127.0.0.1 refused at RCPT by rblsmtpd: 451 4.7.1 listed in bl.example.net (from=<a@example.org> to=<b@example.jp>)`, 'the example line, sender remembered from MAIL');
  t.match(lines[4], new RegExp(`^${escape(p)}127\\.0\\.0\\.1 message ${id} queued: from=<a@example\\.org>, to=<bob@example\\.jp>, \\d+ bytes$`));
  t.match(lines[5], /127\.0\.0\.1 sender <> accepted \(message \w+\)$/, 'the null sender');
  t.equal(lines.at(-2), `${p}127.0.0.1 refused at DATA by rblsmtpd: 554 5.7.1 content refused (from=<> to=<carol@example.jp>,<dave@example.jp>)`, 'a refusal at DATA names every recipient taken');
  t.equal(lines.at(-1), `${p}connection from 127.0.0.1 closed`);
});

t.test('refusals by the core: relaying, AUTH required; connection limits', async (t) => {
  const s = await startTestServer({ listeners: [{ name: 'mx', plugins: ['rcpthosts'] }, { name: 'sub', requireAuth: true, plugins: [] }] });
  t.teardown(() => s.close());
  const c = await s.connect({ listener: 'mx' });
  await c.ehlo();
  await c.mail({ from: 'a@example.org', to: 'b@elsewhere.example', data: 'x\n' });
  await c.quit();
  const d = await s.connect({ listener: 'sub' });
  await d.ehlo();
  t.equal((await d.command('MAIL FROM:<a@example.org>')).code, 530);
  await d.quit();
  await new Promise((r) => setTimeout(r, 100));
  const lines = sentences(s.logs);
  t.ok(lines.some((l) => /^mx\[\w+\]: 127\.0\.0\.1 refused at RCPT by rcpthosts: 553 5\.7\.1 sorry, that domain isn't in my list of allowed rcpthosts \(#5\.7\.1\) \(from=<a@example\.org> to=<b@elsewhere\.example>\)$/.test(l)), lines.join('\n'));
  t.ok(lines.some((l) => /^sub\[\w+\]: 127\.0\.0\.1 refused at MAIL: 530 5\.7\.0 Authentication required$/.test(l)), 'the core refuses without a "by"');
  t.ok(lines.some((l) => /^mx: listening on 127\.0\.0\.1:\d+ \(smtp\)$/.test(l)), 'the listen line');
});

t.test('SMTP AUTH: a failed login, a good one said once', (t) => {
  const f = new SyslogFormatter();
  const s = { ...base, listener: 'sub', conn: 'gej7abf9l6ntr02o', ip: '192.0.2.7' };
  t.equal(
    f.format({ ...s, hook: 'auth', plugin: 'vpopmail', action: 'reject', code: 535, reason: 'Authentication credentials invalid', user: 'alice@example.jp', account: 'alice@example.jp', method: 'PLAIN', msg: 'auth: vpopmail reject: Authentication credentials invalid' }),
    'sub[gej7abf9l6ntr02o]: login failed for alice@example.jp from 192.0.2.7 (PLAIN) by vpopmail: 535 Authentication credentials invalid',
  );
  t.equal(
    f.format({ ...s, hook: 'auth', plugin: 'core', action: 'defer', code: 454, reason: 'locked out after 10 failed logins (by ip)', user: 'alice@example.jp', account: 'alice@example.jp', method: 'LOGIN', msg: 'auth: core defer: locked out' }),
    'sub[gej7abf9l6ntr02o]: login failed for alice@example.jp from 192.0.2.7 (LOGIN): 454 locked out after 10 failed logins (by ip)',
  );
  t.equal(
    f.format({ ...s, hook: 'auth', plugin: 'core', action: 'disconnect', code: 421, reason: '3 failed AUTH attempts', user: 'alice@example.jp', msg: 'auth: core disconnect: 3 failed AUTH attempts' }),
    'sub[gej7abf9l6ntr02o]: 192.0.2.7 disconnected at AUTH: 421 3 failed AUTH attempts (user alice@example.jp)',
  );
  t.equal(
    f.format({ ...s, hook: 'auth', plugin: 'vpopmail', action: 'accept', code: 250, reason: 'OK', user: 'alice@example.jp', account: 'alice@example.jp', method: 'PLAIN', msg: 'auth: vpopmail accept: OK' }),
    'sub[gej7abf9l6ntr02o]: 192.0.2.7 logged in as alice@example.jp (PLAIN) by vpopmail',
  );
  t.equal(f.format({ ...s, event: 'auth', user: 'alice@example.jp', method: 'PLAIN', msg: 'authenticated' }), undefined, 'the "authenticated" line after it repeats it: no second syslog line');
  t.equal(
    f.format({ ...s, event: 'auth-delay', user: 'alice@example.jp', account: 'alice@example.jp', method: 'PLAIN', wait: 1000, failures: 3, by: 'ip', msg: 'delaying the login answer 1000 ms after 3 failures' }),
    'sub[gej7abf9l6ntr02o]: 192.0.2.7: delaying the login answer 1000 ms after 3 failures (user=alice@example.jp)',
    'a line the formatter has no sentence for: msg and the key fields',
  );
  t.end();
});

t.test('POP3: connect, failed and good logins, QUIT, close', (t) => {
  const f = new SyslogFormatter();
  const s = { ...base, listener: 'pop3', conn: 'MX8915CU0GCK005', ip: '192.0.2.7' };
  t.same(
    sentences(
      [
        { ...s, event: 'connect', port: 35150, local: '127.0.0.1:110', secure: false, msg: 'connection opened' },
        { ...s, event: 'login', hook: 'auth', plugin: 'vpopmail', action: 'reject', code: 535, reason: 'Authentication credentials invalid', user: 'alice@example.jp', method: 'USER', result: 'failed', msg: 'login failed: alice@example.jp (USER) by vpopmail: Authentication credentials invalid' },
        { ...s, event: 'login', hook: 'auth', plugin: 'vpopmail', action: 'defer', code: 450, reason: 'mailbox locked by another POP3 session', user: 'alice@example.jp', method: 'APOP', result: 'in-use', maildir: '/var/yubin/domains/example.jp/alice/Maildir', msg: 'login in-use: alice@example.jp (APOP) by vpopmail: mailbox locked by another POP3 session' },
        { ...s, event: 'login', hook: 'auth', plugin: 'vpopmail', action: 'accept', code: 250, user: 'alice@example.jp', method: 'PLAIN', result: 'ok', maildir: '/var/yubin/domains/example.jp/alice/Maildir', messages: 1, octets: 1733, msg: 'login ok: alice@example.jp (PLAIN) by vpopmail' },
        { ...s, event: 'quit', user: 'alice@example.jp', retrieved: 1, deleted: 1, failed: 0, moved: 0, left: 0, msg: 'QUIT: 1 retrieved, 1 deleted, 0 left' },
        { ...s, event: 'close', user: 'alice@example.jp', update: true, msg: 'connection closed' },
        { ...s, event: 'timeout', msg: 'idle for too long, closing' },
        { ...s, event: 'connect', port: 35151, local: '127.0.0.1:995', secure: true, msg: 'connection opened' },
      ],
      f,
    ),
    [
      'pop3[MX8915CU0GCK005]: connection from 192.0.2.7 port 35150 to 127.0.0.1:110',
      'pop3[MX8915CU0GCK005]: login failed for alice@example.jp from 192.0.2.7 (USER) by vpopmail: 535 Authentication credentials invalid',
      'pop3[MX8915CU0GCK005]: login failed for alice@example.jp from 192.0.2.7 (APOP) by vpopmail: 450 mailbox locked by another POP3 session',
      'pop3[MX8915CU0GCK005]: alice@example.jp logged in from 192.0.2.7 (PLAIN) by vpopmail: 1 message (1733 octets)',
      'pop3[MX8915CU0GCK005]: alice@example.jp from 192.0.2.7 quit: 1 retrieved, 1 deleted, 0 left',
      'pop3[MX8915CU0GCK005]: connection from 192.0.2.7 closed (user alice@example.jp, mailbox updated)',
      'pop3[MX8915CU0GCK005]: 192.0.2.7: idle for too long, closing',
      'pop3[MX8915CU0GCK005]: connection from 192.0.2.7 port 35151 to 127.0.0.1:995 over TLS',
    ],
  );
  t.end();
});

t.test('the queue: delivered, deferred (next attempt in local time), failed, bounces, forwards, end', (t) => {
  const q = { ...base, component: 'queue' };
  const next = '2026-12-04T01:02:03.000Z';
  t.same(
    sentences([
      { ...q, event: 'queue-start', messages: 3, msg: 'queue: 3 messages recovered' },
      { ...q, event: 'delivery', id: 'MX8914PY0GCK001', rcpt: 'bob@example.jp', channel: 'local', attempt: 1, result: 'success', text: 'maildir: delivered to example.jp/bob/Maildir/new/1796344325.M973122P21188Q1.vm,S=453,W=469', msg: 'delivery MX8914PY0GCK001 to bob@example.jp: success: ...' },
      { ...q, event: 'delivery', id: 'MX8914PY0GCK002', rcpt: 'c@example.net', channel: 'remote', attempt: 2, result: 'deferral', text: 'Connected to 192.0.2.25 but greeting failed: 421 busy', next, msg: 'delivery ...: deferral' },
      { ...q, event: 'delivery', id: 'MX891AVT0GCK007', rcpt: 'b@example.jp', channel: 'remote', attempt: 1, result: 'failure', text: "Sorry, I couldn't find any host named example.jp. (#5.1.2)", msg: 'delivery ...: failure' },
      { ...q, event: 'delivery', id: 'MX891AVT0GCK008', rcpt: 'd@example.net', channel: 'remote', attempt: 40, result: 'failure', text: 'Connection refused\nI\'m not going to try again; this message has been in the queue too long.', msg: 'delivery ...: failure' },
      { ...q, event: 'bounce', id: 'MX891AVT0GCK007', bounceId: 'MX891AWO0GCK008', to: 'alice@example.jp', rcpts: ['b@example.jp'], msg: 'bounce msg MX891AVT0GCK007 to <alice@example.jp> as MX891AWO0GCK008' },
      { ...q, event: 'bounce', id: 'MX891AWO0GCK008', bounceId: 'MX891AWO0GCK009', to: 'postmaster@mx.example.jp', rcpts: ['alice@example.jp'], msg: 'double bounce msg MX891AWO0GCK008 to <postmaster@mx.example.jp> as MX891AWO0GCK009' },
      { ...q, level: 40, event: 'bounce', id: 'MX891AWO0GCK009', rcpts: ['postmaster@mx.example.jp'], result: 'discarded', msg: 'triple bounce: discarding the failed double bounce MX891AWO0GCK009' },
      { ...q, event: 'delay-notice', id: 'MX8914PY0GCK002', bounceId: 'MX8914PY0GCK00A', to: 'a@example.org', rcpts: ['c@example.net'], msg: 'delay notice msg MX8914PY0GCK002 to <a@example.org> as MX8914PY0GCK00A' },
      { ...q, id: 'MX8914PY0GCK00B', event: 'forward', forwardId: 'MX8914PY0GCK00C', to: ['alice@example.net', 'bob@example.net'], msg: 'forwarded msg ...' },
      { ...q, event: 'queue-end', id: 'MX8914PY0GCK001', msg: 'end msg MX8914PY0GCK001' },
      { ...q, level: 50, event: 'queue-error', id: 'MX8914PY0GCK003', err: 'EACCES: permission denied', msg: 'cannot read queued message MX8914PY0GCK003; trying again later' },
      { ...q, id: 'MX8914PY0GCK004', level: 50, hook: 'deliver', plugin: 'maildir', action: 'defer', code: 451, reason: 'plugin timed out after 30000 ms', msg: 'plugin maildir timed out after 30000 ms in deliver hook' },
    ]),
    [
      'queue: 3 messages recovered',
      'queue: message MX8914PY0GCK001 to bob@example.jp delivered: maildir: delivered to example.jp/bob/Maildir/new/1796344325.M973122P21188Q1.vm,S=453,W=469',
      `queue: message MX8914PY0GCK002 to c@example.net deferred (attempt 2): Connected to 192.0.2.25 but greeting failed: 421 busy; next attempt ${syslogTime(new Date(next))}`,
      "queue: message MX891AVT0GCK007 to b@example.jp failed: Sorry, I couldn't find any host named example.jp. (#5.1.2)",
      "queue: message MX891AVT0GCK008 to d@example.net failed (attempt 40): Connection refused I'm not going to try again; this message has been in the queue too long.",
      'queue: message MX891AVT0GCK007: bounce for b@example.jp sent to <alice@example.jp> as MX891AWO0GCK008',
      'queue: message MX891AWO0GCK008: double bounce for alice@example.jp sent to <postmaster@mx.example.jp> as MX891AWO0GCK009',
      'queue: message MX891AWO0GCK009: the double bounce for postmaster@mx.example.jp could not be delivered either; discarded',
      'queue: message MX8914PY0GCK002: delay notice for c@example.net sent to <a@example.org> as MX8914PY0GCK00A',
      'queue: message MX8914PY0GCK00B forwarded to alice@example.net, bob@example.net as MX8914PY0GCK00C',
      'queue: message MX8914PY0GCK001 finished, removed from the queue',
      'queue: cannot read queued message MX8914PY0GCK003; trying again later (error=EACCES: permission denied)',
      'queue: message MX8914PY0GCK004 deferred at delivery by maildir: 451 plugin timed out after 30000 ms',
    ],
  );
  t.end();
});

t.test('lines the formatter has no sentence for: msg and the key fields, on one line', (t) => {
  const f = new SyslogFormatter();
  t.equal(f.format({ ...base, event: 'ready', msg: 'ready' }), 'ready');
  t.equal(f.format({ ...base, event: 'stop', signal: 'SIGTERM', msg: 'SIGTERM: finishing transactions in progress, then exiting' }), 'SIGTERM: finishing transactions in progress, then exiting');
  t.equal(
    f.format({ ...base, plugin: 'rblsmtpd', conn: 'tugbti10sjoqo6cd', ip: '127.0.0.2', rule: 'RBLSMTPD', code: 451, text: 'listed in bl.example.net', msg: 'rblsmtpd: 451 listed in bl.example.net' }),
    'rblsmtpd[tugbti10sjoqo6cd]: 451 listed in bl.example.net (client=127.0.0.2)',
    "a plugin's own line: its name first, said once",
  );
  t.equal(
    f.format({ ...base, listener: 'mx', ip: '203.0.113.9', err: 'read ECONNRESET', code: 'ECONNRESET', msg: 'client connection error' }),
    'mx: client connection error (client=203.0.113.9, code=ECONNRESET, error=read ECONNRESET)',
  );
  t.equal(
    f.format({ ...base, level: 50, err: { type: 'Error', message: 'boom\n  at x', stack: 'Error: boom\n    at f (file.js:1:1)' }, msg: 'uncaught exception' }),
    'uncaught exception (error=boom at x)',
    'an Error as pino writes it: its message, on one line',
  );
  t.equal(f.format({ level: 30, something: 'new' }), '(empty log line)');
  t.equal(f.format({ ...base, msg: 'line one\nline two\r\n\tthree\u0000' }), 'line one line two three', 'no line breaks or control characters');
  const long = f.format({ ...base, msg: 'x'.repeat(5000) })!;
  t.equal(long.length, MAX_SENTENCE, 'cut to MAX_SENTENCE');
  t.ok(long.endsWith('…'));
  t.equal(
    f.format({ ...base, level: 50, event: 'disk-space', alarm: true, dir: '/var/yubin/queue', free: 1, minFree: 104857600, msg: "ALARM: 0 MB free on the spool's filesystem, below the 100 MB minimum: refusing mail with 452 4.3.1" }),
    "ALARM: 0 MB free on the spool's filesystem, below the 100 MB minimum: refusing mail with 452 4.3.1",
  );
  t.end();
});

t.test('the queued line with the recipients the journal adds; transactions are forgotten at queue, close, and past a bound', (t) => {
  const f = new SyslogFormatter();
  const s = { ...base, listener: 'mx', conn: 'k3j2', ip: '203.0.113.9' };
  f.format({ ...s, hook: 'mail', plugin: 'core', action: 'accept', code: 250, from: 'a@example.org', id: 'ABC123', msg: 'mail: core accept' });
  t.equal(f.openTransactions, 1);
  t.equal(
    f.format({ ...s, event: 'queued', hook: 'queue', plugin: 'core', action: 'accept', code: 250, id: 'ABC123', size: 1234, from: 'a@example.org', rcpts: 5, to: ['a@x.jp', 'b@x.jp', 'c@x.jp', 'd@x.jp', 'e@x.jp'], messageId: '<m@x>', msg: 'message queued' }),
    'mx[k3j2]: 203.0.113.9 message ABC123 queued: from=<a@example.org>, to=<a@x.jp>,<b@x.jp>,<c@x.jp> and 2 more, 1234 bytes',
  );
  t.equal(f.openTransactions, 0, 'queued: forgotten');
  f.format({ ...s, hook: 'mail', plugin: 'core', action: 'accept', code: 250, from: 'a@example.org', id: 'ABC124', msg: 'mail: core accept' });
  f.format({ ...s, event: 'close', msg: 'connection closed' });
  t.equal(f.openTransactions, 0, 'close: forgotten');
  f.format({ ...s, hook: 'mail', plugin: 'badmailfrom', action: 'reject', code: 553, enhanced: '5.7.1', reason: 'sorry, your envelope sender is in my badmailfrom list (#5.7.1)', from: 'x@spam.example', msg: 'mail: badmailfrom reject' });
  t.equal(f.openTransactions, 0, 'a refused MAIL opens no transaction');
  for (let i = 0; i < 10_050; i++) f.format({ ...s, conn: `c${i}`, hook: 'mail', plugin: 'core', action: 'accept', code: 250, from: 'a@example.org', id: `ID${i}`, msg: 'mail: core accept' });
  t.equal(f.openTransactions, 10_000, 'connections that never close cost a bounded amount of memory');
  t.end();
});

t.test('severity from the pino level; PRI; the classic local timestamp', (t) => {
  t.same([60, 50, 40, 30, 20, 10].map(severityOf), [SEVERITY.crit, SEVERITY.err, SEVERITY.warning, SEVERITY.info, SEVERITY.debug, SEVERITY.debug]);
  t.equal(priority('mail', SEVERITY.info), 22);
  t.equal(priority('mail', SEVERITY.warning), 20);
  t.equal(priority('local0', SEVERITY.err), 131);
  t.equal(syslogTime(new Date(2026, 11, 4, 9, 5, 7)), 'Dec  4 09:05:07');
  t.equal(syslogTime(new Date(2026, 0, 14, 23, 59, 0)), 'Jan 14 23:59:00');
  t.end();
});

t.test('config: log.syslog and its defaults', (t) => {
  const listeners = 'listeners:\n  - { name: mx, protocol: smtp, listen: "127.0.0.1:25" }\n';
  t.equal(parseConfig(listeners, '/etc/yubin/yubin.yaml').config.log.syslog, undefined, 'no syslog unless asked');
  t.same(parseConfig(`log: { syslog: {} }\n${listeners}`, '/etc/yubin/yubin.yaml').config.log.syslog, { facility: 'mail', tag: 'yubin', socket: '/dev/log' });
  t.same(parseConfig(`log:\n  syslog:\n${listeners}`, '/etc/yubin/yubin.yaml').config.log.syslog, { facility: 'mail', tag: 'yubin', socket: '/dev/log' }, 'an empty syslog: block too');
  t.same(parseConfig(`log: { syslog: { facility: local3, tag: mx1, socket: /run/log } }\n${listeners}`, '/etc/yubin/yubin.yaml').config.log.syslog, { facility: 'local3', tag: 'mx1', socket: '/run/log' });
  t.throws(() => parseConfig(`log: { syslog: { facility: email } }\n${listeners}`, '/etc/yubin/yubin.yaml'), /log\.syslog\.facility/);
  t.throws(() => parseConfig(`log: { syslog: { tag: "two words" } }\n${listeners}`, '/etc/yubin/yubin.yaml'), /log\.syslog\.tag/);
  t.throws(() => parseConfig(`log: { syslog: { sokcet: /dev/log } }\n${listeners}`, '/etc/yubin/yubin.yaml'), /sokcet/);
  t.end();
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
