/**
 * The queue tests' rig: a server delivering to Maildirs and, through a
 * loopback DNS server, to an SMTP sink; a clock the test moves.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Test } from 'tap';
import { ManualClock, Tokens } from '../core/index.js';
import { startTestServer, type TestServer, type TestServerOptions } from '../core/testing/index.js';
import { startDnsServer, type DnsServer, type ZoneRecords } from './peers/dns.js';
import { startSink, type Sink, type SinkBehaviour } from './peers/sink.js';

export const BIRTH = Date.UTC(2026, 0, 5, 12, 0, 0);

export interface Rig {
  readonly server: TestServer;
  readonly sink: Sink;
  readonly dns: DnsServer;
  readonly clock: ManualClock;
}

export async function rig(
  t: Test,
  o: { sink?: SinkBehaviour; zones?: Record<string, ZoneRecords>; config?: Record<string, unknown>; delivery?: Record<string, unknown>; dataDir?: string; clock?: ManualClock; sinkPeer?: Sink; listener?: TestServerOptions['listener']; plugins?: Record<string, unknown> } = {},
): Promise<Rig> {
  const sink = o.sinkPeer ?? (await startSink(o.sink));
  const dns = await startDnsServer(o.zones ?? { 'remote.test': { MX: [{ preference: 10, exchange: 'mx.remote.test' }] }, 'mx.remote.test': { A: ['127.0.0.1'] } });
  const clock = o.clock ?? new ManualClock(BIRTH);
  const options: TestServerOptions = {
    deliver: true,
    plugins: ['rcpthosts'],
    pluginOptions: o.plugins ?? { rcpthosts: { domains: ['example.test', 'localhost'] } },
    listener: o.listener,
    dataDir: o.dataDir,
    config: {
      dns: { servers: [dns.address], timeout: '2s', tries: 1 },
      delivery: { plugins: ['maildir'], remotePort: sink.port, connectTimeout: '2s', greetingTimeout: '5s', commandTimeout: '5s', ...o.delivery },
      ...o.config,
    },
    configure: (c) => c.register(Tokens.Clock, { useValue: clock }),
  };
  const server = await startTestServer(options);
  t.teardown(async () => {
    await server.close();
    if (!o.sinkPeer) await sink.close();
    await dns.close();
  });
  return { server, sink, dns, clock };
}

/** Sends one message over SMTP and returns its queue id. */
export async function send(s: TestServer, from: string, to: string[], body = 'Subject: test message\n\nhello there\n'): Promise<string> {
  const c = await s.connect();
  await c.ehlo('client.example');
  const r = await c.mail({ from, to, data: body });
  await c.quit();
  const id = /queued as (\S+)/.exec(r.data?.text ?? '')?.[1];
  if (!id) throw new Error(`not queued: ${JSON.stringify(r)}`);
  return id;
}

export async function maildir(s: TestServer, domain: string, user: string): Promise<string[]> {
  const dir = path.join(s.dataDir, 'mail', domain, user, 'Maildir', 'new');
  const names = await readdir(dir).catch(() => [] as string[]);
  return Promise.all(names.sort().map((n) => readFile(path.join(dir, n), 'utf8')));
}

/** Queues a message for remote recipients without an SMTP client (the spool's own entry point). */
export function inject(s: TestServer, sender: string, recipients: string[], body = 'Subject: out\r\nMessage-ID: <orig@example.test>\r\n\r\nbody\r\n', received = BIRTH): Promise<string> {
  return injectMessage(s, { sender, to: recipients, body, received });
}

type Params = Record<string, string | true>;

/** Queues a message with SMTP parameters (DSN, REQUIRETLS) as a session would have kept them. */
export function injectMessage(
  s: TestServer,
  o: { sender?: string; to: ReadonlyArray<string | { address: string; params: Params }>; senderParams?: Params; body?: string; received?: number },
): Promise<string> {
  return s.server.spool.inject(Buffer.from(o.body ?? 'Subject: out\r\nMessage-ID: <orig@example.test>\r\n\r\nbody\r\n'), {
    sender: o.sender ?? 'alice@example.test',
    senderParams: o.senderParams ?? {},
    recipients: o.to.map((r) => (typeof r === 'string' ? { address: r, params: {} } : r)),
    received: o.received ?? BIRTH,
    listener: 'test',
    remoteIp: '127.0.0.1',
    heloName: undefined,
    authUser: undefined,
    prependHeaders: '',
  });
}
