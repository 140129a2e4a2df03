/**
 * Local delivery of a message with many recipients (issue 15, item 3): the
 * recipients of one message are one job, the message read once for them
 * all; each Maildir still gets its own copy with its own Return-Path and
 * Delivered-To, and a recipient that fails (over quota, deferred by a
 * plugin) is bounced or retried on its own while the others are delivered.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { answer, definePlugin } from '../core/index.js';
import { SharedMessage } from '../core/queue/shared-message.js';
import { Spool } from '../core/queue/spool.js';
import { startTestServer } from '../core/testing/index.js';
import { SqliteStore } from '../plugins/vpopmail/sqlite-store.js';
import { hashPassword } from '../plugins/vpopmail/passwords.js';
import { tempDir } from './helpers.js';

const DOMAINS = ['a.test', 'b.test', 'c.test'];

t.test('25 local recipients over three domains: one copy each with its own headers; over quota bounces, a deferral is retried, alone', async (t) => {
  // Defers later@b.test on its first try; everyone else goes on to vpopmail.
  let deferLater = true;
  const tries = new Map<string, number>();
  /** The message Buffers each queued message's recipients were handed. */
  const reads = new Map<string, Set<Buffer>>();
  const watcher = definePlugin({
    name: 'watcher',
    setup: () => ({
      hooks: {
        async deliver({ delivery }) {
          const a = delivery.recipient.address;
          tries.set(a, (tries.get(a) ?? 0) + 1);
          const copies = reads.get(delivery.queueId) ?? new Set<Buffer>();
          copies.add(await delivery.message.read());
          reads.set(delivery.queueId, copies);
          if (a === 'later@b.test' && deferLater) return answer.defer(451, '4.2.0', 'not now');
          return answer.continue();
        },
      },
    }),
  });
  const server = await startTestServer({
    deliver: true,
    listeners: [{ name: 'smtp', plugins: ['rcpthosts', 'vpopmail'] }],
    pluginOptions: { rcpthosts: { domains: [] } },
    deliveryPlugins: [watcher, 'vpopmail'],
    config: { localDomains: ['localhost'], queue: { concurrencyRemote: 0 } },
  });
  const store = new SqliteStore(path.join(server.dataDir, 'vpopmail.sqlite'));
  t.teardown(async () => {
    store.close();
    await server.close();
  });
  const hash = await hashPassword('pw');
  const recipients: string[] = [];
  for (const domain of DOMAINS) {
    store.addDomain({ name: domain });
    for (let i = 0; i < 8; i++) {
      store.addUser({ domain, name: `u${i}`, passwordHash: hash });
      recipients.push(`u${i}@${domain}`);
    }
  }
  // The sender, for the bounce; a user whose quota the message exceeds; one a plugin defers.
  store.addUser({ domain: 'a.test', name: 'sender', passwordHash: hash });
  store.addUser({ domain: 'b.test', name: 'later', passwordHash: hash });
  store.addUser({ domain: 'c.test', name: 'full', passwordHash: hash, quota: '1000S' });
  recipients.splice(5, 0, 'full@c.test');
  recipients.push('later@b.test');
  t.equal(recipients.length, 26);

  const root = path.join(server.dataDir, 'domains');
  const newFiles = async (address: string) => {
    const [user, domain] = address.split('@') as [string, string];
    const dir = path.join(root, domain, user, 'Maildir', 'new');
    const names = await readdir(dir).catch(() => [] as string[]);
    return Promise.all(names.map((n) => readFile(path.join(dir, n), 'latin1')));
  };

  const c = await server.connect({ listener: 'smtp' });
  await c.ehlo('client.example');
  const body = `Subject: many\r\nMessage-ID: <many@remote.test>\r\n\r\n${'line of the body\r\n'.repeat(100)}.dot\r\n`;
  const r = await c.mail({ from: 'sender@a.test', to: recipients, data: body });
  await c.quit();
  t.equal(r.data?.code, 250, 'accepted for every recipient');
  t.ok(r.rcpt.every((x) => x.code === 250));
  await server.server.queue.idle();

  for (const rcpt of recipients.filter((a) => a !== 'full@c.test' && a !== 'later@b.test')) {
    const files = await newFiles(rcpt);
    t.equal(files.length, 1, `${rcpt}: one copy`);
    const lines = files[0]!.split('\n');
    t.equal(lines[0], 'Return-Path: <sender@a.test>', `${rcpt}: Return-Path`);
    t.equal(lines[1], `Delivered-To: ${rcpt}`, `${rcpt}: its own Delivered-To`);
    t.notOk(files[0]!.includes('\r'), `${rcpt}: LF line ends`);
    t.ok(files[0]!.endsWith(`${'line of the body\n'.repeat(100)}.dot\n`), `${rcpt}: the whole body`);
  }
  t.same(await newFiles('full@c.test'), [], 'over quota: nothing stored');
  t.same(await newFiles('later@b.test'), [], 'deferred: nothing stored yet');
  const bounces = await newFiles('sender@a.test');
  t.equal(bounces.length, 1, 'one bounce to the sender');
  t.match(bounces[0], /Final-Recipient: rfc822; full@c\.test\nAction: failed\nStatus: 5\.2\.2/);
  t.notMatch(bounces[0], /Final-Recipient: rfc822; (?!full@c\.test)/, 'for the over-quota recipient only');
  const [id] = await server.server.spool.list();
  t.ok(id, 'the message stays queued for the deferred recipient');
  t.equal(reads.get(id!)?.size, 1, 'all 26 recipients were handed the same copy of the message (one read)');
  const state = await server.server.spool.readState(id!);
  const byAddress = new Map(state!.recipients.map((x) => [x.address, x]));
  t.equal(byAddress.get('later@b.test')!.status, 'pending');
  t.match(byAddress.get('later@b.test')!.error, /not now/);
  t.equal(byAddress.get('full@c.test')!.status, 'failed');
  t.equal(state!.recipients.filter((x) => x.status === 'delivered').length, 24, 'the others are recorded delivered');

  deferLater = false;
  server.server.queue.flush();
  await server.server.queue.idle();
  t.equal((await newFiles('later@b.test')).length, 1, 'the deferred recipient is delivered on the retry');
  t.same(await server.server.spool.list(), [], 'then the message is gone');
  t.equal(tries.get('later@b.test'), 2);
  t.ok(
    recipients.filter((a) => a !== 'later@b.test').every((a) => tries.get(a) === 1),
    'no other recipient was tried again',
  );
  t.equal((await newFiles('sender@a.test')).length, 1, 'and no second bounce');
});

t.test('SharedMessage: one read, as a Buffer and as streams, prepended headers on top', async (t) => {
  const spool = new Spool(await tempDir(t));
  await spool.init();
  const id = await spool.inject(Buffer.from('Subject: x\r\n\r\nbody\r\n'), {
    sender: 'a@b.test',
    senderParams: {},
    recipients: [{ address: 'c@d.test', params: {} }],
    received: Date.now(),
    listener: 'test',
    remoteIp: '127.0.0.1',
    heloName: undefined,
    authUser: undefined,
    prependHeaders: 'Received: by test\r\n',
  });
  const shared = new SharedMessage(spool, id, await spool.readEnvelope(id));
  const whole = 'Received: by test\r\nSubject: x\r\n\r\nbody\r\n';
  t.equal(shared.size, whole.length);
  const first = await shared.read();
  t.equal(first.toString(), whole);
  t.equal(await shared.read(), first, 'the same Buffer the second time');
  const chunks: Buffer[] = [];
  for await (const chunk of shared.stream()) chunks.push(chunk as Buffer);
  t.equal(Buffer.concat(chunks).toString(), whole, 'a stream over it');
});
