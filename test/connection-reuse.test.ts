/**
 * Outbound connection reuse (Postfix's connection cache): many messages to
 * one domain share a few SMTP sessions, within the limits on messages per
 * session, idle time and age; a session the server closed is not reused.
 * A real Postfix receives over the reused sessions and counts them in its
 * log, and takes a DSN request passed on to it.
 */
import t, { type Test } from 'tap';
import { startPostfixReceiver, type PostfixReceiver } from './peers/postfix.js';
import { injectMessage, maildir, rig } from './queue-rig.js';
import { needs, tempDir } from './helpers.js';
import { sleep } from './peers/net.js';
import type { TestServer } from '../core/testing/index.js';

function injectMany(server: TestServer, n: number, params: Record<string, string> = {}): Promise<string[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => injectMessage(server, { to: [{ address: `user${i % 7}@remote.test`, params }], body: `Subject: message ${i}\r\nMessage-ID: <m${i}@example.test>\r\n\r\nbody ${i}\r\n` })));
}

const onPostfix = needs('postfix', 'postconf');
const asRoot = process.getuid?.() === 0 || process.env.CI === 'true' ? onPostfix : { skip: 'a private Postfix instance needs root' };

async function postfix(t: Test): Promise<PostfixReceiver> {
  const pf = await startPostfixReceiver(await tempDir(t, 'yubin-pf-'), ['remote.test']);
  t.teardown(() => pf.stop());
  return pf;
}

t.test('1,000 messages to one domain reach a real Postfix over at most 50 connections (counted in its log)', asRoot, async (t) => {
  const pf = await postfix(t);
  const { server } = await rig(t, { delivery: { remotePort: pf.port } });
  const started = Date.now();
  await injectMany(server, 1000);
  await server.server.queue.idle();
  const seconds = (Date.now() - started) / 1000;
  t.same(await server.server.spool.list(), [], 'all delivered');
  // Postfix's discard agent logs each delivery; smtpd logs each connection.
  for (let i = 0; i < 50 && pf.lines(/\/discard\[\d+\]: .* status=sent/).length < 1000; i++) await sleep(100);
  t.equal(pf.lines(/\/discard\[\d+\]: .* status=sent/).length, 1000, 'Postfix delivered 1,000');
  const connects = pf.lines(/\/smtpd\[\d+\]: connect from /).length;
  t.ok(connects >= 1 && connects <= 50, `${connects} connections for 1,000 messages (at most 50)`);
  const { opened, reused } = server.server.queue.sessions;
  t.ok(reused > 900, `${reused} deliveries on a reused session, ${opened} opened (${seconds.toFixed(1)} s)`);
  // Postfix's own warnings are shown, not judged: a loaded machine makes it warn about timing.
  for (const line of pf.problems()) t.comment(`postfix: ${line}`);
});

t.test('a DSN request passed on to Postfix: it sends the success notice, we do not', asRoot, async (t) => {
  const pf = await postfix(t);
  const { server } = await rig(t, { delivery: { remotePort: pf.port } });
  await injectMany(server, 1, { NOTIFY: 'SUCCESS', ORCPT: 'rfc822;orig@remote.test' });
  await server.server.queue.idle();
  for (let i = 0; i < 50 && !pf.lines(/sender delivery status notification/).length; i++) await sleep(100);
  t.equal(pf.lines(/sender delivery status notification/).length, 1, 'Postfix took NOTIFY=SUCCESS and reported delivery itself');
  // Postfix's success notice goes to the sender (its discard transport takes it too).
  t.equal(pf.lines(/\/discard\[\d+\]: .*to=<alice@example\.test>.* status=sent/).length, 1, "Postfix's notice to the sender");
  t.same(await maildir(server, 'example.test', 'alice'), [], 'no success notice of ours');
});

t.test('maxMessages per session, idle time, and a session the server closed', async (t) => {
  const { server, sink } = await rig(t, { delivery: { connectionReuse: { maxMessages: 3, idleTime: '300ms', maxAge: '5m' } }, config: { queue: { concurrencyPerDomain: 1 } } });
  await injectMany(server, 7);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 7);
  t.equal(sink.connections, 3, '7 messages, at most 3 per session: 3 sessions');
  t.equal(server.server.queue.sessions.size(), 1, 'the last session waits for more');
  await sleep(800);
  t.equal(server.server.queue.sessions.size(), 0, 'closed after the idle time');
  t.equal(sink.openConnections, 0, 'QUIT sent: the sink has no connection left');

  // A session the server drops while idle is forgotten, and the next message still goes out.
  await injectMany(server, 1);
  await server.server.queue.idle();
  t.equal(server.server.queue.sessions.size(), 1, 'one idle session');
  sink.dropConnections();
  for (let i = 0; i < 20 && server.server.queue.sessions.size() > 0; i++) await sleep(50);
  t.equal(server.server.queue.sessions.size(), 0, 'forgotten once the server hung up');
  const before = sink.connections;
  await injectMany(server, 1);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 9, 'delivered over a new session');
  t.equal(sink.connections, before + 1);
});

t.test('idleTime 0 turns reuse off: one session per delivery', async (t) => {
  const { server, sink } = await rig(t, { delivery: { connectionReuse: { idleTime: 0 } }, config: { queue: { concurrencyPerDomain: 1 } } });
  await injectMany(server, 4);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 4);
  t.equal(sink.connections, 4);
  t.equal(server.server.queue.sessions.size(), 0);
});
