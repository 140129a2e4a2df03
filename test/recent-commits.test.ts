/**
 * A message is delivered from what its commit left in memory on its first
 * attempt, and from the spool file afterwards: the spool's readers are
 * watched (not replaced) to see which path each delivery took, and the
 * delivered copies are compared byte for byte on both paths.
 */
import t from 'tap';
import { RecentCommits } from '../core/queue/recent-commits.js';
import type { Envelope, Spool } from '../core/queue/spool.js';
import { inject, maildir, rig, send } from './queue-rig.js';
import { startSink } from './peers/sink.js';

const envelope = { id: 'X', size: 0 } as Envelope;

t.test('RecentCommits: bounded in bytes, oldest out first, each entry taken once', async (t) => {
  const recent = new RecentCommits(1024 * 3 + 3000);
  recent.put('a', { envelope, message: Buffer.alloc(1000) });
  recent.put('b', { envelope, message: Buffer.alloc(1000) });
  recent.put('c', { envelope, message: Buffer.alloc(1000) });
  t.equal(recent.size, 3, 'three fit');
  recent.put('d', { envelope, message: Buffer.alloc(1000) });
  t.equal(recent.size, 3, 'the fourth pushed one out');
  t.equal(recent.take('a'), undefined, 'the oldest went');
  t.equal(recent.take('d')?.message?.length, 1000);
  t.equal(recent.take('d'), undefined, 'taken once');
  recent.put('huge', { envelope, message: Buffer.alloc(10_000) });
  t.equal(recent.take('huge'), undefined, 'an entry larger than the bound is not kept');
  t.equal(recent.size, 2, 'and pushed nothing out');
});

/** Counts the spool's reads of envelopes and of messages (whole, or as a stream). */
function watchReads(spool: Spool): { envelopes: number; messages: number } {
  const seen = { envelopes: 0, messages: 0 };
  const readEnvelope = spool.readEnvelope.bind(spool);
  const readStored = spool.readStored.bind(spool);
  const openMessage = spool.openMessage.bind(spool);
  spool.readEnvelope = (id) => {
    seen.envelopes++;
    return readEnvelope(id);
  };
  spool.readStored = (id, into) => {
    seen.messages++;
    return readStored(id, into);
  };
  spool.openMessage = (id, envelope) => {
    seen.messages++;
    return openMessage(id, envelope);
  };
  return seen;
}

t.test('the first local delivery reads nothing back from the spool; a message too large to hold is read from its file', async (t) => {
  const { server } = await rig(t);
  const seen = watchReads(server.server.spool);
  const body = 'Subject: from memory\n\nline one\n.dot at the start\n' + 'x'.repeat(3000) + '\n';
  await send(server, 'alice@example.net', ['bob@example.test', 'carol@example.test']);
  await send(server, 'alice@example.net', ['dave@example.test'], body);
  await server.server.queue.idle();
  t.same(seen, { envelopes: 0, messages: 0 }, 'neither envelope nor message read from the spool');
  t.equal((await maildir(server, 'example.test', 'bob')).length, 1);
  t.equal((await maildir(server, 'example.test', 'carol')).length, 1);
  const [copy] = await maildir(server, 'example.test', 'dave');
  t.match(copy, /\n\nline one\n\.dot at the start\nx{3000}\n$/, 'delivered whole');

  const large = 'Subject: large\n\n' + ('z'.repeat(999) + '\n').repeat(200);
  await send(server, 'alice@example.net', ['frank@example.test'], large);
  await server.server.queue.idle();
  t.ok(seen.envelopes === 0 && seen.messages >= 1, `a 200 KB message is read from its spool file (${JSON.stringify(seen)})`);
  const [big] = await maildir(server, 'example.test', 'frank');
  t.equal(big?.split('\n').filter((l) => l === 'z'.repeat(999)).length, 200, 'delivered whole');
});

t.test('remote: the first attempt sends from memory, a retry from the spool file, and both send the same bytes', async (t) => {
  const sink = await startSink({ data: (n) => (n === 2 ? { code: 451, message: '4.3.0 busy' } : undefined) });
  t.teardown(() => sink.close());
  const { server, clock } = await rig(t, { sinkPeer: sink });
  const seen = watchReads(server.server.spool);
  const body = 'Subject: twice\r\nMessage-ID: <same@example.test>\r\n\r\nthe same body\r\n' + 'w'.repeat(2000) + '\r\n';
  await inject(server, 'alice@example.test', ['one@remote.test'], body);
  await server.server.queue.idle();
  t.same(seen, { envelopes: 0, messages: 0 }, 'accepted at the first attempt, sent from memory');
  await inject(server, 'alice@example.test', ['one@remote.test'], body);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 1, 'the second message was deferred');
  clock.advance(400_000);
  server.server.queue.wake();
  await server.server.queue.idle();
  t.ok(seen.envelopes >= 1 && seen.messages >= 1, `the retry read envelope and message from the spool (${JSON.stringify(seen)})`);
  t.equal(sink.messages.length, 2, 'delivered at the retry');
  t.equal(sink.messages[1]!.data, sink.messages[0]!.data, 'the same bytes from memory as from disk');
});
