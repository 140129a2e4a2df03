/** Real clients against a real listener: swaks, Python's smtplib, nodemailer. */
import t from 'tap';
import nodemailer from 'nodemailer';
import { startTestServer } from '../core/testing/index.js';
import { needs, run } from './helpers.js';

t.test('swaks, plain and STARTTLS, with a pipelined transaction', needs('swaks'), async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { tls: 'starttls' } });
  t.teardown(() => s.close());
  const plain = await run('swaks', ['--server', `127.0.0.1:${s.port}`, '--to', 'postmaster@localhost', '--from', 'a@example.net', '--pipeline']);
  t.equal(plain.code, 0, plain.stdout);
  const tls = await run('swaks', ['--server', `127.0.0.1:${s.port}`, '--tls', '--to', 'postmaster@localhost', '--from', 'a@example.net', '--header', 'Subject: over tls']);
  t.equal(tls.code, 0, tls.stdout);
  const relay = await run('swaks', ['--server', `127.0.0.1:${s.port}`, '--to', 'x@elsewhere.example', '--from', 'a@example.net']);
  t.equal(relay.code, 24, 'swaks exits 24 when the recipient is refused');
  const queued = await s.queued();
  t.equal(queued.length, 2);
  t.ok(queued.some((m) => /with ESMTPS id/.test(m.text) && /Subject: over tls/.test(m.text)));
});

const PY = `
import smtplib, sys, ssl
port = int(sys.argv[1])
with smtplib.SMTP('127.0.0.1', port, local_hostname='python.example') as s:
    code, _ = s.ehlo()
    assert code == 250
    assert s.has_extn('pipelining') and s.has_extn('8bitmime') and s.has_extn('smtputf8') and s.has_extn('size')
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo()
    refused = s.sendmail('py@example.net', ['postmaster@localhost', 'x@elsewhere.example'], 'Subject: from python\\r\\n\\r\\nhello from smtplib\\r\\n.leading dot\\r\\n')
    print(sorted(refused.items()))
    try:
        s.sendmail('py@example.net', ['x@elsewhere.example'], 'Subject: relay\\r\\n\\r\\nno\\r\\n')
    except smtplib.SMTPRecipientsRefused as e:
        print('refused', e.recipients['x@elsewhere.example'][0])
`;

t.test('Python smtplib: STARTTLS, partial refusal, SMTPRecipientsRefused', needs('python3'), async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { tls: 'starttls' } });
  t.teardown(() => s.close());
  const r = await run('python3', ['-c', PY, String(s.port)]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /\[\('x@elsewhere\.example', \(553, b"5\.7\.1 sorry, that domain isn't in my list of allowed rcpthosts \(#5\.7\.1\)"\)\)\]/);
  t.match(r.stdout, /refused 553/);
  const [m] = await s.queued();
  t.match(m?.text, /\r\nSubject: from python\r\n\r\nhello from smtplib\r\n\.leading dot\r\n$/);
  t.same(m?.envelope.recipients.map((x) => x.address), ['postmaster@localhost']);
});

t.test('nodemailer with SMTPUTF8 and 8BITMIME content', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'], listener: { tls: 'starttls' } });
  t.teardown(() => s.close());
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: s.port, secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, name: 'nodemailer.example' });
  const info = await transport.sendMail({ from: 'ノード@example.net', to: 'postmaster@localhost', subject: '郵便のテスト', text: 'こんにちは\n' });
  t.same(info.accepted, ['postmaster@localhost']);
  t.match(info.response, /^250 2\.0\.0 Ok: queued as /);
  await t.rejects(transport.sendMail({ from: 'a@example.net', to: 'x@elsewhere.example', subject: 'relay', text: 'no' }), /553/);
  transport.close();
  const [m] = await s.queued();
  t.equal(m?.envelope.sender, 'ノード@example.net', 'UTF-8 sender kept');
  t.match(m?.text, /with ESMTPS id/);
});
