/** A plugin from its own npm package, and one from a path, named in a config file. */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { Spool } from '../core/queue/spool.js';
import { SmtpTestClient } from '../core/testing/index.js';
import { serve, tempDir, yubin } from './helpers.js';

const LOCAL_PLUGIN = `// a site's own plugin, next to its config
export default {
  name: 'local-greeter',
  setup: () => ({ hooks: { mail: ({ sender }) => sender && sender.domain === 'blocked.example'
    ? { action: 'reject', code: 550, enhanced: '5.7.1', text: 'blocked by the local plugin' }
    : { action: 'continue' } } }),
};
`;

t.test('the example package (test/fixtures/yubin-plugin-example) loads by package name from a config file', async (t) => {
  const dir = await tempDir(t);
  await writeFile(path.join(dir, 'local-plugin.mjs'), LOCAL_PLUGIN);
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(
    config,
    [
      'dataDir: ./var',
      // Held, so the queued message is still in the spool when the test reads it (no delivery plugin: it would bounce at once).
      'queue: { concurrencyLocal: 0 }',
      'plugins:',
      '  yubin-plugin-example:',
      '    refuse: [nobody@localhost]',
      '    header: X-Example-Seen',
      'listeners:',
      '  - name: smtp',
      '    protocol: smtp',
      '    listen: 127.0.0.1:0',
      '    plugins: [./local-plugin.mjs, yubin-plugin-example, rcpthosts]',
      '',
    ].join('\n'),
  );
  const check = await yubin(['check-config', '--config', config]);
  t.equal(check.code, 0, check.stderr);
  t.match(check.stdout, /1\. \.\/local-plugin\.mjs \(local-greeter\) \[path\] hooks: mail\n {2}2\. yubin-plugin-example \(example\) \[package\] hooks: rcpt, data; options \{"refuse":\["nobody@localhost"\],"header":"X-Example-Seen"\}\n {2}3\. rcpthosts \[built-in\]/);

  const server = await serve(t, config, 1);
  const c = await SmtpTestClient.connect(server.ports.smtp!);
  await c.ehlo();
  t.same(await c.command('MAIL FROM:<x@blocked.example>').then((r) => [r.code, r.text]), [550, 'blocked by the local plugin']);
  await c.command('MAIL FROM:<x@fine.example>');
  const refused = await c.command('RCPT TO:<nobody@localhost>');
  t.same([refused.code, refused.enhanced], [550, '5.1.1'], 'the package plugin answers');
  t.equal((await c.command('RCPT TO:<postmaster@localhost>')).code, 250);
  t.equal((await c.command('DATA')).code, 354);
  c.write('Subject: third party\r\n\r\nhello\r\n.\r\n');
  const r = await c.read();
  t.equal(r.code, 250);
  await c.quit();
  const id = /queued as (\w+)/.exec(r.text)![1]!;
  const env = await new Spool(path.join(dir, 'var/queue')).readEnvelope(id);
  t.equal(env.prependHeaders, 'X-Example-Seen: seen by example on listener smtp\r\n', 'its header is on the queued message');
  await server.stop();
});

t.test("the package's own options schema is enforced at start", async (t) => {
  const dir = await tempDir(t);
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(config, 'plugins:\n  yubin-plugin-example:\n    refuse: nobody\nlisteners:\n  - { name: smtp, protocol: smtp, listen: "127.0.0.1:0", plugins: [yubin-plugin-example] }\n');
  const r = await yubin(['check-config', '--config', config]);
  t.equal(r.code, 2);
  t.match(r.stderr, /yubin\.yaml:3: plugins\.yubin-plugin-example\.refuse: a list of addresses/);
});
