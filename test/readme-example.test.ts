/** The plugin and test shown in README.md, kept true by running them. */
import t from 'tap';
import { z } from 'zod';
import { answer, definePlugin, ManualClock, Tokens } from '../core/index.js';
import { startTestServer } from '../core/testing/index.js';

const noWeekendMail = definePlugin({
  name: 'no-weekend-mail',
  options: z.object({ domain: z.string() }),
  setup({ options, services }) {
    return {
      hooks: {
        rcpt({ recipient, connection }) {
          if (recipient.domain !== options.domain || connection.state.trusted) return answer.continue();
          const day = new Date(services.clock.now()).getUTCDay();
          return day === 0 || day === 6 ? answer.defer(450, '4.7.1', 'closed for the weekend') : answer.continue();
        },
      },
    };
  },
});

t.test('deferred on Saturday', async (t) => {
  const saturday = new ManualClock(Date.parse('2026-11-28T12:00:00Z'));
  const server = await startTestServer({
    plugins: [noWeekendMail, 'rcpthosts'],
    pluginOptions: { 'no-weekend-mail': { domain: 'localhost' } },
    configure: (services) => services.register(Tokens.Clock, { useValue: saturday }),
  });
  t.teardown(() => server.close());
  const client = await server.connect({ localAddress: '127.0.0.2' });
  await client.ehlo();
  const r = await client.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: hi\n\nhello\n' });
  t.equal(r.rcpt[0]?.code, 450);
  saturday.advance(2 * 86_400_000);
  const again = await client.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: hi\n\nhello\n' });
  t.equal(again.data?.code, 250);
  t.equal((await server.queued()).length, 1);
});

t.test('the production example config passes check-config', async (t) => {
  const { yubin } = await import('./helpers.js');
  const r = await yubin(['check-config', '--config', 'config/examples/yubin.production.yaml']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /listener mx: smtp on 0\.0\.0\.0:25, tls starttls\n.*\n  1\. tcprules \[built-in\] hooks: connect; options \{"file":"[^"]+"\}\n  2\. whitelist \[built-in\] hooks: connect.*\n  3\. badmailfrom \[built-in\] hooks: mail, rcpt.*\n  4\. rcpthosts \[built-in\] hooks: rcpt/);
  t.match(r.stdout, /listener mx6: smtp on \[::\]:25/);
  t.match(r.stdout, /listener submissions: smtp on 0\.0\.0\.0:465, tls implicit/);
  t.match(r.stdout, /listener metrics: http on 127\.0\.0\.1:2080, tls none\n  serves: metrics/);
  t.match(r.stdout, /listener web: http on 0\.0\.0\.0:443, tls implicit\n  serves: webadmin \(plugin\)/);
});
