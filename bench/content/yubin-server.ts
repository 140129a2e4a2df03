/**
 * yubin's side of the content-filter benchmark, its own Node process (the
 * pattern of bench/antispam/yubin-server.ts): this checkout's server through
 * the test harness, one SMTP listener on an ephemeral 127.0.0.1 port, the
 * queue held (accept-only), and rcpthosts plus, as asked, spamassassin
 * (maxSize 1 MB) and/or clamav (defaults), each pointed at the bench's
 * loopback spamd / clamd. Logs at warn and above go to stderr as JSON lines.
 *
 * Input: YUBIN_BENCH_CONTENT, JSON (see Input). Output: one line
 * `{"port": N}` on stdout once listening. SIGTERM, SIGINT or the end of
 * stdin close the server and exit.
 */
import { createLogger } from '../../core/logger.js';
import { startTestServer, type TestServer } from '../../core/testing/index.js';
import { childInput, exitWhenTold } from '../common.js';

export interface Input {
  readonly dataDir: string;
  /** spamd's loopback port, when spamassassin is on. */
  readonly spamd?: number;
  /** clamd's loopback port, when clamav is on. */
  readonly clamd?: number;
  /** spamassassin's maxSize, octets. */
  readonly spamMaxSize: number;
  /** A closed loopback UDP port as the only resolver: no DNS query leaves the machine. */
  readonly dnsPort: number;
}

const input = childInput<Input>('YUBIN_BENCH_CONTENT');

let server: TestServer | undefined;
exitWhenTold(() => server?.close());

try {
  const plugins = ['rcpthosts'];
  const pluginOptions: Record<string, unknown> = {};
  if (input.spamd !== undefined) {
    plugins.push('spamassassin');
    pluginOptions.spamassassin = { host: '127.0.0.1', port: input.spamd, maxSize: input.spamMaxSize };
  }
  if (input.clamd !== undefined) {
    plugins.push('clamav');
    pluginOptions.clamav = { host: '127.0.0.1', port: input.clamd };
  }
  server = await startTestServer({
    dataDir: input.dataDir,
    log: createLogger({ level: 'warn', destination: process.stderr, format: 'json' }),
    config: {
      hostname: 'mx.bench.test',
      localDomains: ['localhost', 'bench.test'],
      logLevel: 'warn',
      queue: { concurrencyLocal: 0, concurrencyRemote: 0 },
      dns: { servers: [`127.0.0.1:${input.dnsPort}`], timeout: '1s', tries: 1 },
    },
    plugins,
    pluginOptions,
  });
  process.stdout.write(JSON.stringify({ port: server.port }) + '\n');
} catch (err) {
  process.stderr.write(`yubin-server: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
}
