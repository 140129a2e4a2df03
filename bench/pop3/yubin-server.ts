/**
 * yubin's side of the POP3 benchmark, run as its own Node process (so yubin,
 * like Dovecot, has processes of its own and the load client runs apart):
 * this checkout's server, started with the test harness on an ephemeral
 * 127.0.0.1 port, one POP3 listener without TLS (allowInsecureAuth) and an
 * inline plugin whose auth hook takes the bench users and names their
 * Maildir. Logs at warn level and above go to stderr as JSON lines.
 *
 * Input: the environment variable YUBIN_BENCH_POP3, JSON
 * `{ "users": { "name": "/maildir" }, "password": "...", "dataDir": "..." }`.
 * Output: one line `{"port": N}` on stdout once listening. SIGTERM or SIGINT
 * closes the server and exits, as does the end of stdin (the bench died).
 */
import { answer } from '../../core/answers.js';
import { createLogger } from '../../core/logger.js';
import { definePlugin } from '../../core/plugin.js';
import { startTestServer, type TestServer } from '../../core/testing/index.js';
import { exitWhenTold } from '../common.js';

interface Input {
  readonly users: Record<string, string>;
  readonly password: string;
  readonly dataDir: string;
}

const input = JSON.parse(process.env.YUBIN_BENCH_POP3 ?? 'null') as Input | null;
if (!input) {
  process.stderr.write('yubin-server: YUBIN_BENCH_POP3 is not set\n');
  process.exit(2);
}
const users = new Map(Object.entries(input.users));

const benchAuth = definePlugin({
  name: 'bench-pop3-auth',
  setup() {
    return {
      hooks: {
        auth(ctx) {
          const maildir = users.get(ctx.username);
          if (maildir === undefined || ctx.password !== input.password) return answer.reject(535, '5.7.8', 'authentication failed');
          ctx.mailbox(maildir);
          return answer.accept('authenticated', 235, '2.7.0');
        },
      },
    };
  },
});

let server: TestServer | undefined;
exitWhenTold(() => server?.close());

try {
  server = await startTestServer({
    dataDir: input.dataDir,
    log: createLogger({ level: 'warn', destination: process.stderr, format: 'json' }),
    config: { logLevel: 'warn' },
    listeners: [{ name: 'pop3', protocol: 'pop3', allowInsecureAuth: true, plugins: [benchAuth] }],
  });
  process.stdout.write(JSON.stringify({ port: server.ports.pop3 }) + '\n');
} catch (err) {
  process.stderr.write(`yubin-server: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
}
