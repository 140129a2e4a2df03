/** A client that talks before the greeting is refused (spamdyke's greeting-delay check), one that waits is served. */
import net from 'node:net';
import t from 'tap';
import { answer, definePlugin } from '../core/index.js';
import { startTestServer } from '../core/testing/index.js';

/** Holds the greeting back, as spamdyke's greeting-delay-secs does. */
const delay = definePlugin({
  name: 'greeting-delay',
  setup: () => ({
    hooks: {
      async connect() {
        await new Promise((r) => setTimeout(r, 400));
        return answer.continue();
      },
    },
  }),
});

function talk(port: number, early: string | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let out = '';
    let quit = false;
    sock.on('connect', () => {
      if (early) sock.write(early);
    });
    sock.on('data', (d: Buffer) => {
      out += d.toString();
      if (!early && !quit && /^220 /m.test(out)) {
        quit = true;
        sock.write('QUIT\r\n');
      }
    });
    sock.on('error', reject);
    sock.on('close', () => resolve(out));
  });
}

t.test('early talkers get 554 and are cut off; patient clients get the greeting', async (t) => {
  const s = await startTestServer({ plugins: [delay] });
  t.teardown(() => s.close());
  const early = await talk(s.port, 'EHLO spam.example\r\nMAIL FROM:<x@spam.example>\r\n');
  t.equal(early, '554 5.5.1 Refused. You are not following the SMTP protocol.\r\n', 'one refusal, no greeting, nothing run');
  t.ok(
    s.logs.some((l) => l.hook === 'connect' && l.code === 554 && /early talker/.test(String(l.reason)) && l.command === 'EHLO spam.example'),
    'logged as a decision with what was sent',
  );
  const patient = await talk(s.port, undefined);
  t.match(patient, /^220 mx\.test ESMTP\r\n221 /, 'served normally');
  t.same(await s.queued(), []);
});

t.test('limits.maxConnectionTime ends a connection that lasts too long, busy or not', async (t) => {
  const s = await startTestServer({ listener: { limits: { maxConnectionTime: '600ms', idleTimeout: '60s' } } });
  t.teardown(() => s.close());
  const c = await s.connect();
  await c.ehlo();
  const started = Date.now();
  // Keep it busy with NOOPs: the idle timeout never fires, the connection limit does.
  let last = '';
  while (Date.now() - started < 9_000) {
    try {
      const r = await c.command('NOOP');
      last = `${r.code} ${r.text}`;
      if (r.code === 421) break;
    } catch {
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  t.match(last, /^421 .*Connection time limit reached/);
  t.ok(Date.now() - started < 9_000, 'cut off by the connection limit, before the idle timeout could matter');
  t.ok(s.logs.some((l) => l.code === 421 && /connection time limit/.test(String(l.reason))), 'logged');
});
