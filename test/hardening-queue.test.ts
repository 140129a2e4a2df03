/**
 * Hardening (issue 18, defect 9): duplicate deliveries.
 * - At start-up the listeners take mail before the queue's recovery listing
 *   is done; a message being read at the moment the listing was checked was
 *   scheduled a second time and delivered twice.
 * - SIGTERM waited for deliveries, not for the step that records them and
 *   removes the message: after a restart they were delivered again.
 * Now a message is scheduled exactly once, and a stop returns only when
 * every delivery's outcome is on disk: 0 duplicates after clean restarts
 * (the crash rig's SIGTERM run, in crash.test.ts).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import t from 'tap';
import { answer, definePlugin, LocalDomains, SystemClock } from '../core/index.js';
import { createLogger } from '../core/logger.js';
import { Pipeline } from '../core/pipeline.js';
import { deliverySchema, queueSchema } from '../core/config/schema.js';
import { Scheduler } from '../core/queue/scheduler.js';
import { Spool } from '../core/queue/spool.js';
import { startTestServer } from '../core/testing/index.js';
import { tempDir } from './helpers.js';

t.test('messages committed while the queue recovers at start are delivered once each', async (t) => {
  const dir = await tempDir(t);
  const spool = new Spool(path.join(dir, 'queue'));
  await spool.init();
  const log = createLogger({ level: 'info', format: 'json', destination: new Writable({ write: (_chunk, _enc, cb) => cb() }) });
  const delivered = new Map<string, number>();
  const pipeline = new Pipeline(
    [
      {
        name: 'count',
        hooks: {
          deliver: async ({ delivery }) => {
            await new Promise((r) => setTimeout(r, 2));
            delivered.set(delivery.queueId, (delivered.get(delivery.queueId) ?? 0) + 1);
            return answer.accept();
          },
        },
      },
    ],
    5_000,
    log,
  );
  const scheduler = new Scheduler({
    spool,
    clock: new SystemClock(),
    log,
    dns: undefined as never, // local mail only
    localDomains: new LocalDomains(['localhost']),
    hostname: 'mx.test',
    queue: () => queueSchema.parse({}),
    delivery: () => deliverySchema.parse({}),
    runtime: () => ({ pipeline, lease: { acquire: () => undefined, release: () => undefined } }),
    isOwnSocket: () => false,
  });
  t.teardown(() => scheduler.stop(5_000));
  // As the server starts: commits are announced from the first, the spool is listed a moment later.
  scheduler.attach();
  const envelope = { sender: 'a@example.net', senderParams: {}, recipients: [{ address: 'user@localhost', params: {} }], received: Date.now(), listener: 'smtp', remoteIp: '127.0.0.1', heloName: undefined, authUser: undefined, prependHeaders: '' };
  const ids: string[] = [];
  for (let round = 0; round < 20; round++) {
    // Messages arrive while recovery lists the spool, again and again.
    const listing = round === 0 ? scheduler.start() : (scheduler as unknown as { rescan(): Promise<number> }).rescan();
    for (let i = 0; i < 10; i++) ids.push(await spool.inject(Buffer.from(`Subject: ${round}.${i}\r\n\r\nx\r\n`), envelope));
    await listing;
  }
  await scheduler.idle();
  const twice = ids.filter((id) => (delivered.get(id) ?? 0) > 1);
  t.same(twice, [], 'no message delivered twice');
  t.equal(ids.filter((id) => delivered.get(id) === 1).length, ids.length, `all ${ids.length} delivered once`);
  t.same(await spool.list(), [], 'and removed from the queue');
});

t.test('a stop waits until each delivery is recorded: the restarted server delivers nothing again', async (t) => {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'yubin-stop-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const deliveries: string[] = [];
  let release!: () => void;
  const started = new Promise<void>((resolve) => (release = resolve));
  const slow = definePlugin({
    name: 'slow',
    setup: () => ({
      hooks: {
        async deliver({ delivery }) {
          release();
          await new Promise((r) => setTimeout(r, 300));
          deliveries.push(`${delivery.queueId} ${delivery.recipient.address}`);
          return answer.accept();
        },
      },
    }),
  });
  const first = await startTestServer({ dataDir, deliver: true, plugins: ['rcpthosts'], deliveryPlugins: [slow] });
  const c = await first.connect();
  await c.ehlo('client.example');
  const r = await c.mail({ from: 'a@example.net', to: ['one@localhost', 'two@localhost'], data: 'Subject: once\n\nx\n' });
  t.equal(r.data?.code, 250);
  c.close();
  await started; // a delivery is in progress
  await first.server.stop(10_000);
  t.same(await first.server.spool.list(), [], 'once stop returns, the delivered message is gone from the queue');
  const second = await startTestServer({ dataDir, deliver: true, plugins: ['rcpthosts'], deliveryPlugins: [slow] });
  t.teardown(() => second.close());
  await second.server.queue.idle();
  t.equal(deliveries.length, 2, 'each recipient delivered once, none again after the restart');
  t.equal(new Set(deliveries).size, 2);
});
