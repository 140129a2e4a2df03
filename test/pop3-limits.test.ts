/** A connect plugin lowers a POP3 connection's timeouts (Connection.limitTime), as spamdyke's idle and connection timeouts do. */
import t from 'tap';
import { answer, definePlugin } from '../core/index.js';
import { Pop3TestClient, startTestServer } from '../core/testing/index.js';

const limits = (idle?: number, total?: number) =>
  definePlugin({
    name: 'limits',
    setup: () => ({
      hooks: {
        connect({ connection }) {
          connection.limitTime({ idle, total });
          return answer.continue();
        },
      },
    }),
  });

t.test('idle and total limits from a connect plugin end a POP3 session early', async (t) => {
  for (const [name, plugin, expected] of [
    ['idle', limits(300, undefined), /^-ERR autologout/],
    ['total', limits(undefined, 700), /^-ERR \[SYS\/TEMP\] connection time limit reached/],
  ] as const) {
    const s = await startTestServer({ listeners: [{ name: 'pop3', protocol: 'pop3', allowInsecureAuth: true, plugins: [plugin] }] });
    t.teardown(() => s.close());
    const c = await Pop3TestClient.connect(s.ports.pop3!);
    const started = Date.now();
    let reply = '';
    // USER every 200 ms keeps the idle clock from firing; only the total limit can end that one.
    while (Date.now() - started < 30_000) {
      reply = await (name === 'total' ? c.command('USER alice') : c.readLine()).catch(() => 'closed');
      if (reply.startsWith('-ERR')) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    t.match(reply, expected, `${name}: ${reply}`);
    t.ok(Date.now() - started < 60_000, `${name}: ended by the plugin's limit, not the listener's 5 minutes`);
  }
});
