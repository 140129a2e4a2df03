/**
 * bench/crash/start-race: a message accepted while the queue is being
 * recovered at start-up must still be scheduled.
 *
 * The listeners are bound before the scheduler lists the spool, and the
 * scheduler only hooks `spool.onCommit` after that listing has returned: a
 * message committed while the listing runs is in neither, so that process
 * never delivers it (nor does `queue flush`); it waits for the next restart.
 * The window is as long as the readdir of `queue/mess`, so this probe makes
 * it wide: it fills the spool with N messages first (held by
 * `concurrencyLocal: 0`, so nothing is delivered), starts the server on a
 * fixed port with clients already knocking, and after a few seconds compares
 * the committed messages on disk with what the scheduler knows (control
 * socket `status`: waiting + active + held).
 *
 *   node dist/bench/crash/start-race.js [--messages 30000] [--clients 4] [--keep]
 *
 * Exit 1 when the scheduler misses messages, 0 when it knows them all.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { controlRequest } from '../../core/queue/control.js';
import { Load, sleep } from './client.js';
import { repoRoot } from '../common.js';
import { queuedIds } from './scan.js';
import { emptyLogCounts, ServerProcess } from './server.js';
import { Spool } from '../../core/queue/spool.js';
import { freePort } from '../smtp-accept/proc.js';


async function main(): Promise<number> {
  const { values } = parseArgs({ options: { messages: { type: 'string', default: '30000' }, clients: { type: 'string', default: '4' }, keep: { type: 'boolean', default: false } } });
  const prefill = Number(values.messages);
  const clients = Number(values.clients);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'yubin-start-race-'));
  const dataDir = path.join(dir, 'var');
  const port = await freePort();
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(
    config,
    `hostname: mx.crash.test
dataDir: ./var
localDomains: [crash.test]
logLevel: info
queue: { concurrencyLocal: 0 }
delivery: { plugins: [maildir] }
listeners:
  - { name: smtp, protocol: smtp, listen: "127.0.0.1:${port}", plugins: [rcpthosts] }
`,
  );
  const spool = new Spool(path.join(dataDir, 'queue'));
  await spool.init(false);
  const now = Date.now();
  for (let i = 0; i < prefill; i++) {
    await spool.inject(Buffer.from('Subject: x\r\n\r\nx\r\n'), { sender: 'a@crash.test', senderParams: {}, recipients: [{ address: 'user1@crash.test', params: {} }], received: now, listener: 'smtp', remoteIp: '127.0.0.1', heloName: undefined, authUser: undefined, prependHeaders: '' });
  }
  console.log(`spool filled with ${prefill} held messages; starting yubin on 127.0.0.1:${port} with ${clients} clients already connecting`);
  let stopped = false;
  const load = new Load({ port: async () => (stopped ? undefined : port) }, { clients, seed: 1, replyTimeoutMs: 15_000, thinkMs: 0 });
  load.start();
  const logDir = path.join(dir, 'logs');
  await mkdir(logDir);
  const server = new ServerProcess({ cli: path.join(repoRoot(), 'dist/core/cli.js'), config, logDir, n: 1, counts: emptyLogCounts() });
  try {
    await server.waitReady(60_000);
    await sleep(2_000);
    stopped = true;
    await load.stop(10_000);
    // Let the scheduler look at everything: the held messages are read one by one.
    let known = 0;
    for (let i = 0; i < 240; i++) {
      const st = await controlRequest(dataDir, { cmd: 'status' });
      if (st?.ok && st.waiting === 0 && st.active === 0) {
        known = st.held ?? 0;
        break;
      }
      await sleep(500);
    }
    const onDisk = (await queuedIds(dataDir)).length;
    const acknowledged = [...load.messages.values()].filter((m) => m.status === 'acknowledged').length;
    console.log(`acknowledged ${acknowledged} new messages; committed on disk ${onDisk}; known to the scheduler ${known}`);
    const missing = onDisk - known;
    if (missing > 0) {
      console.log(`FAIL: ${missing} committed messages are not scheduled by this process (they wait for the next restart; queue flush does not reach them)`);
      return 1;
    }
    console.log('OK: the scheduler knows every committed message');
    return 0;
  } finally {
    stopped = true;
    await load.stop(1_000);
    await server.kill9();
    if (values.keep) console.log(`kept ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`start-race: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  },
);
