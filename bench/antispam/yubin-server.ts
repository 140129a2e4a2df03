/**
 * yubin's side of the anti-spam benchmark, run as its own Node process so its
 * CPU and memory are measured apart from the load client: this checkout's
 * server through the test harness, one SMTP listener on an ephemeral
 * 127.0.0.1 port with maxConnections 2000, the queue held (accept-only),
 * DNS pointed at the bench's loopback DNS server with a large cache, and
 * either the anti-spam plugins (rblsmtpd, spamdyke, rcpthosts) or rcpthosts
 * alone. Logs at warn and above go to stderr as JSON lines.
 *
 * Input: YUBIN_BENCH_ANTISPAM, JSON (see Input). Output: one line
 * `{"port": N}` on stdout once listening. Over the IPC channel it answers
 * `{ type: 'memory' }` with process.memoryUsage() taken after a full GC (run
 * node with --expose-gc). SIGTERM, SIGINT or the end of stdin close the
 * server and exit.
 */
import { createLogger } from '../../core/logger.js';
import { startTestServer, type TestServer } from '../../core/testing/index.js';
import { childInput, exitWhenTold } from '../common.js';

export interface Input {
  readonly dataDir: string;
  /** 127.0.0.1:PORT of the DNS server. */
  readonly dns: string;
  readonly antispam: boolean;
  readonly store: 'memory' | 'sqlite';
  readonly zones: string[];
  readonly maxConnections: number;
}

const input = childInput<Input>('YUBIN_BENCH_ANTISPAM');

let server: TestServer | undefined;
exitWhenTold(() => server?.close());
process.on('message', (m: { type?: string }) => {
  if (m?.type !== 'memory') return;
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    gc();
    gc();
  }
  process.send?.({ type: 'memory', gc: gc !== undefined, usage: process.memoryUsage() });
});

try {
  server = await startTestServer({
    dataDir: input.dataDir,
    log: createLogger({ level: 'warn', destination: process.stderr, format: 'json' }),
    config: {
      hostname: 'mx.bench.test',
      localDomains: ['localhost', 'bench.test'],
      logLevel: 'warn',
      queue: { concurrencyLocal: 0, concurrencyRemote: 0 },
      // One resolver on loopback; answers kept for the whole run whatever their TTL.
      dns: { servers: [input.dns], timeout: '2s', tries: 1, cacheSize: 1_000_000, minTtl: '1h' },
      store: { backend: input.store },
    },
    plugins: input.antispam ? ['rblsmtpd', 'spamdyke', 'rcpthosts'] : ['rcpthosts'],
    listener: { limits: { maxConnections: input.maxConnections, idleTimeout: '10m' } },
    pluginOptions: input.antispam
      ? {
          rblsmtpd: { zones: input.zones },
          spamdyke: {
            rejectEmptyRdns: true,
            rejectUnresolvableRdns: true,
            s25r: { enabled: true },
            // minDelay 0: the second attempt of a (sender, recipient) pair passes; the bench primes its pair first.
            graylist: { enabled: true, key: 'sender-recipient', minDelay: 0 },
          },
        }
      : {},
  });
  process.stdout.write(JSON.stringify({ port: server.port }) + '\n');
} catch (err) {
  process.stderr.write(`yubin-server: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
}
