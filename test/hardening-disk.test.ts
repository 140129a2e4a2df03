/**
 * Hardening (issue 18, defect 10): a full disk. The client used to see
 * `450 4.2.1 ENOSPC: no space left on device, write` (internal text) and
 * nothing was logged. Now: 451 4.3.0 with a neutral text and one log line
 * naming the cause; and below a free-space threshold MAIL is refused with
 * 452 4.3.1 while an alarm is logged.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { startTestServer } from '../core/testing/index.js';
import { needs, run, serve, tempDir } from './helpers.js';

const SEND = `
import smtplib, sys
port, size = int(sys.argv[1]), int(sys.argv[2])
body = ('x' * 76 + '\\r\\n') * (size // 78)
with smtplib.SMTP('127.0.0.1', port, local_hostname='client.example') as s:
    s.ehlo()
    try:
        s.sendmail('a@example.net', ['postmaster@localhost'], 'Subject: big\\r\\n\\r\\n' + body)
        print('250')
    except smtplib.SMTPDataError as e:
        print(e.smtp_code, e.smtp_error.decode())
    except smtplib.SMTPSenderRefused as e:
        print(e.smtp_code, e.smtp_error.decode())
`;

t.test('the spool filesystem fills up during DATA: 451 4.3.0, neutral words, one log line, nothing kept', needs('python3', 'unshare'), async (t) => {
  const dir = await tempDir(t);
  const dataDir = path.join(dir, 'var');
  await mkdir(dataDir);
  await writeFile(
    path.join(dir, 'yubin.yaml'),
    ['hostname: mx.disk.test', 'dataDir: ./var', 'localDomains: [localhost]', 'queue: { minFreeSpace: 0, concurrencyLocal: 0 }', 'listeners:', '  - { name: smtp, protocol: smtp, listen: "127.0.0.1:0", plugins: [rcpthosts] }', ''].join('\n'),
  );
  // The server runs in its own mount namespace with a 1 MB tmpfs as its dataDir: a full
  // disk nobody else sees, gone with the process (root, or a user namespace where allowed).
  const root = process.getuid?.() === 0;
  const wrapper = ['unshare', '--mount', ...(root ? [] : ['--map-root-user']), 'sh', '-c', 'mount -t tmpfs -o size=1m yubin-full "$0" && exec "$@"', dataDir];
  const server = await serve(t, path.join(dir, 'yubin.yaml'), 1, wrapper);
  const port = server.ports.smtp!;
  const big = await run('python3', ['-c', SEND, String(port), String(3 * 1024 * 1024)]);
  t.equal(big.code, 0, big.stderr);
  t.equal(big.stdout.trim(), '451 4.3.0 Error writing to the queue, please try again later', 'a temporary failure in neutral words');
  t.notMatch(big.stdout, /ENOSPC|no space/i, 'no internal text on the wire');
  const logged = server.logs.filter((l) => l.hook === 'queue' && l.action === 'defer' && l.code === 451);
  t.equal(logged.length, 1, 'one log line for the refusal');
  t.match(logged[0], { level: 50, errno: 'ENOSPC' }, 'naming the cause');
  const small = await run('python3', ['-c', SEND, String(port), '2000']);
  t.equal(small.stdout.trim(), '250', 'the half-written message was removed: a small one still fits');
  t.equal(await server.stop(), 0, 'clean stop');
});

t.test('below minFreeSpace: MAIL gets 452 4.3.1 and an alarm is logged', needs('swaks'), async (t) => {
  // No disk has 1,000 TB free: the threshold is always crossed.
  const s = await startTestServer({ plugins: ['rcpthosts'], config: { queue: { minFreeSpace: '1000000G', concurrencyLocal: 0, concurrencyRemote: 0 } } });
  t.teardown(() => s.close());
  const r = await run('swaks', ['--server', `127.0.0.1:${s.port}`, '--to', 'postmaster@localhost', '--from', 'a@example.net']);
  t.match(r.stdout, /<\*\*\s+452 4\.3\.1 Insufficient system storage/, 'refused before DATA');
  t.same(await s.queued(), []);
  const alarm = s.logs.find((l) => l.event === 'disk-space' && l.alarm === true);
  t.match(alarm, { level: 50, minFree: 1000000 * 1024 ** 3 }, 'an alarm line at error level');
  t.match(String(alarm?.msg), /^ALARM: \d+ MB free on the spool's filesystem/);
  await run('swaks', ['--server', `127.0.0.1:${s.port}`, '--to', 'postmaster@localhost', '--from', 'a@example.net']);
  t.equal(s.logs.filter((l) => l.event === 'disk-space' && l.alarm === true).length, 1, 'repeated once a minute, not once per message');
});
