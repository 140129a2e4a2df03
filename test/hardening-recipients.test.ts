/**
 * Hardening (issue 18, defect 1): repeating a recipient got past
 * maxRecipients (smtp-server counts distinct addresses only) and put one copy
 * per RCPT into the Maildir. Every RCPT now counts, and a repeated address
 * (in any case) is answered 250 and delivered once.
 */
import { readdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { startTestServer } from '../core/testing/index.js';
import { needs, run } from './helpers.js';

const PY = `
import smtplib, sys
port = int(sys.argv[1])
codes = {}
with smtplib.SMTP('127.0.0.1', port, local_hostname='client.example') as s:
    s.ehlo()
    s.mail('someone@remote.example')
    spellings = ['alice@dom.test', 'ALICE@dom.test', 'alice@DOM.TEST', 'Alice@Dom.Test']
    for i in range(1000):
        code, msg = s.rcpt(spellings[i % len(spellings)])
        key = '%d %s' % (code, msg.decode()[:5])
        codes[key] = codes.get(key, 0) + 1
    code, msg = s.data(b'Subject: many times\\r\\n\\r\\nonce\\r\\n')
    print('data', code)
for k in sorted(codes):
    print(k, codes[k])
`;

t.test('1,000 RCPTs of one address: 100 answered 250, the rest 452 4.5.3; delivered once', needs('python3'), async (t) => {
  const s = await startTestServer({
    deliver: true,
    plugins: ['rcpthosts'],
    config: { localDomains: ['dom.test'], delivery: { plugins: ['maildir'] } },
  });
  t.teardown(() => s.close());
  const r = await run('python3', ['-c', PY, String(s.port)]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^250 2\.1\.5 100$/m, 'the first 100 RCPTs are taken (and count)');
  t.match(r.stdout, /^452 4\.5\.3 900$/m, 'the other 900 are refused: the limit counts every RCPT');
  t.match(r.stdout, /^data 250$/m, 'the message is queued');
  await s.server.queue.idle();
  const [queued] = await s.queued();
  t.notOk(queued, 'and delivered');
  const files = await readdir(path.join(s.dataDir, 'mail', 'dom.test', 'alice', 'Maildir', 'new'));
  t.equal(files.length, 1, 'one copy in the Maildir, not one per RCPT');
  t.ok(s.logs.some((l) => l.hook === 'rcpt' && l.reason === 'repeated recipient, delivered once'), 'repeats are logged');
});

t.test('100,000 pipelined RCPTs in one connection: bounded, and the session goes on', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], config: { localDomains: ['dom.test'] } });
  t.teardown(() => s.close());
  const socket = net.connect({ host: '127.0.0.1', port: s.port });
  t.teardown(() => socket.destroy());
  let replies = '';
  socket.on('data', (d: Buffer) => (replies += d.toString('latin1')));
  await new Promise((r) => socket.once('connect', r));
  const lines = ['EHLO client.example', 'MAIL FROM:<a@remote.example>', ...Array.from({ length: 100_000 }, (_, i) => `RCPT TO:<${i % 2 ? 'ALICE' : 'alice'}@dom.test>`), 'RSET', 'QUIT'];
  socket.write(lines.join('\r\n') + '\r\n');
  await new Promise((r) => socket.once('close', r));
  const rcptReplies = replies.split('\r\n').filter((l) => /^(250 2\.1\.5|452)/.test(l));
  t.equal(rcptReplies.length, 100_000, 'every RCPT answered');
  t.equal(rcptReplies.filter((l) => l.startsWith('250')).length, 100, '100 taken');
  t.equal(rcptReplies.filter((l) => l.startsWith('452 4.5.3')).length, 99_900, 'the rest refused');
  t.match(replies, /\r\n221 /, 'QUIT answered: the connection survived');
});
