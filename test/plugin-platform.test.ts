/**
 * The plugin platform as a plugin author and an admin meet it: options per
 * listener (merged over the top-level block, one instance per distinct
 * options), declared order, unused options blocks as errors, load and setup
 * errors that name the file and line, and commands from a site's own plugins.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { z } from 'zod';
import { answer, ConfigError, definePlugin } from '../core/index.js';
import { Spool } from '../core/queue/spool.js';
import { SmtpTestClient, startTestServer } from '../core/testing/index.js';
import { serve, tempDir, writeFiles, yubin } from './helpers.js';

let setups = 0;
const tag = definePlugin({
  name: 'tag',
  options: z.strictObject({ header: z.string().default('X-Tag'), value: z.string() }),
  setup({ options }) {
    setups++;
    return {
      hooks: {
        data({ message }) {
          message.addHeader(options.header, options.value);
          return answer.continue();
        },
      },
    };
  },
});

async function send(server: Awaited<ReturnType<typeof startTestServer>>, listener: string): Promise<void> {
  const c = await server.connect({ listener });
  await c.ehlo();
  const r = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: `Subject: via ${listener}\n\nhello\n` });
  if (r.data?.code !== 250) throw new Error(`not accepted on ${listener}: ${JSON.stringify(r)}`);
  await c.quit();
}

t.test('options per listener, merged over the top-level block; one instance per distinct options', async (t) => {
  setups = 0;
  const server = await startTestServer({
    pluginOptions: { tag: { header: 'X-Site', value: 'default' } },
    listeners: [
      { name: 'mx', plugins: [[tag, { value: 'mx' }], 'rcpthosts'] },
      { name: 'sub', plugins: [{ tag: { value: 'submission' } }, 'rcpthosts'] },
      { name: 'plain', plugins: [tag, 'rcpthosts'] },
      { name: 'mx2', plugins: [[tag, { value: 'mx' }], 'rcpthosts'] },
    ],
  });
  t.teardown(() => server.close());
  t.equal(setups, 3, 'mx and mx2 share one instance: same plugin, same effective options');
  for (const l of ['mx', 'sub', 'plain', 'mx2']) await send(server, l);
  const tags = (await server.queued()).map((m) => /^X-Site: (.*)\r$/m.exec(m.text)?.[1]).sort();
  t.same(tags, ['default', 'mx', 'mx', 'submission'], "each listener's options; the header name from the top-level block");
});

t.test('the harness refuses an options block no listener uses, as a config file does', async (t) => {
  const err = await startTestServer({ plugins: [tag], pluginOptions: { tag: { value: 'x' }, tga: { value: 'y' } } }).then(
    (s) => s.close().then(() => undefined),
    (e: unknown) => e,
  );
  t.ok(err instanceof ConfigError, 'a ConfigError');
  t.match((err as Error).message, /plugins\.tga: options for a plugin no listener or delivery lists/);
});

t.test('check-config: per-listener options printed, errors with file:line and exit 2', async (t) => {
  const dir = await tempDir(t);
  const good = [
    'dataDir: ./var',
    'plugins:',
    '  rblsmtpd: { zones: [bl.example.net] }',
    'listeners:',
    '  - name: mx',
    '    protocol: smtp',
    '    listen: 127.0.0.1:0',
    '    plugins:',
    '      - tcprules: { file: ./tcp.smtp }',
    '      - rblsmtpd: { permanent: true }',
    '      - rcpthosts',
    '  - name: sub',
    '    protocol: smtp',
    '    listen: 127.0.0.1:0',
    '    plugins: [rblsmtpd, rcpthosts]',
    '',
  ].join('\n');
  await writeFiles(dir, { 'good.yaml': good, 'tcp.smtp': '127.0.0.1:allow,RELAYCLIENT=""\n' });
  const ok = await yubin(['check-config', '-c', path.join(dir, 'good.yaml')]);
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /listener mx: .*\n.*\n {2}1\. tcprules \[built-in\] hooks: connect; options \{"file":"\.\/tcp\.smtp"\}\n {2}2\. rblsmtpd \[built-in\] hooks: connect, rcpt; options \{"zones":\["bl\.example\.net"\],"permanent":true\}\n {2}3\. rcpthosts/);
  t.match(ok.stdout, /listener sub: .*\n.*\n {2}1\. rblsmtpd \[built-in\] hooks: connect, rcpt; options \{"zones":\["bl\.example\.net"\]\}\n/);

  const cases: Array<[string, string, RegExp]> = [
    ['order.yaml', good.replace('      - tcprules: { file: ./tcp.smtp }\n      - rblsmtpd: { permanent: true }', '      - rblsmtpd: { permanent: true }\n      - tcprules: { file: ./tcp.smtp }'), /order\.yaml:9: listeners\[0\]\(mx\)\.plugins\[0\]: rblsmtpd must come after tcprules \(rblsmtpd declares after: \[tcprules\]\), but tcprules is at position 2/],
    ['unused.yaml', good.replace('plugins:\n  rblsmtpd', 'plugins:\n  spamassassin: { rejectScore: 8 }\n  rblsmtpd'), /unused\.yaml:3: plugins\.spamassassin: options for a plugin no listener or delivery lists/],
    ['twokeys.yaml', good.replace('      - rcpthosts\n', '      - { rcpthosts: {}, badmailfrom: {} }\n'), /twokeys\.yaml:11: listeners\[0\]\(mx\)\.plugins\[2\]: a plugin entry is a name or a map with one key/],
    ['badopt.yaml', good.replace('permanent: true', 'permanent: maybe'), /badopt\.yaml:10: listeners\[0\]\(mx\)\.plugins\[1\]\.rblsmtpd\.permanent: /],
    ['badtop.yaml', good.replace('zones: [bl.example.net]', 'zones: bl.example.net'), /badtop\.yaml:3: plugins\.rblsmtpd\.zones: /],
    ['setup.yaml', good.replace('./tcp.smtp', './missing.tcp'), /setup\.yaml:9: listeners\[0\]\(mx\)\.plugins\[0\]: plugin tcprules could not start: cannot read .*missing\.tcp/],
  ];
  for (const [name, text, want] of cases) {
    await writeFile(path.join(dir, name), text);
    const r = await yubin(['check-config', '-c', path.join(dir, name)]);
    t.equal(r.code, 2, `${name}: exit 2`);
    t.match(r.stderr, want, `${name}: ${r.stderr.trim()}`);
  }
});

t.test('a plugin that does not load is named with its file and line; a CommonJS build is told it must be ESM', async (t) => {
  const dir = await tempDir(t);
  await writeFiles(dir, {
    'syntax.mjs': "export default {\n  name: 'broken',\n  setup() { return { hooks: {} } ;\n};\n",
    'throws.mjs': "const x = 1;\nthrow new Error('no licence key');\nexport default { name: 'x', setup: () => ({ hooks: {} }) };\n",
    'cjs.cjs': "'use strict';\nObject.defineProperty(exports, '__esModule', { value: true });\nexports.default = { name: 'cjs', setup: () => ({ hooks: {} }) };\n",
  });
  const config = (ref: string) => `dataDir: ./var\nlisteners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:0\n    plugins: [${ref}]\n`;
  const cases: Array<[string, RegExp]> = [
    ['./syntax.mjs', /c\.yaml:6: listeners\[0\]\(smtp\)\.plugins\[0\]: plugin "\.\/syntax\.mjs" failed to load at .*syntax\.mjs:\d+: /],
    ['./throws.mjs', /plugin "\.\/throws\.mjs" failed to load at .*throws\.mjs:2: no licence key/],
    ['./cjs.cjs', /plugin "\.\/cjs\.cjs" \(.*cjs\.cjs\): a CommonJS build: yubin plugins are ES modules/],
  ];
  for (const [ref, want] of cases) {
    await writeFile(path.join(dir, 'c.yaml'), config(ref));
    const r = await yubin(['check-config', '-c', path.join(dir, 'c.yaml')]);
    t.equal(r.code, 2, `${ref}: exit 2`);
    t.match(r.stderr, want, r.stderr.trim());
  }
});

t.test("a site's own plugin adds a yubin command, found through the config", async (t) => {
  const dir = await tempDir(t);
  await mkdir(path.join(dir, 'plugins'));
  await writeFiles(dir, {
    'plugins/hello.mjs': [
      "export default {",
      "  name: 'hello',",
      '  setup: () => ({ hooks: {} }),',
      '  commands({ program, configOption }) {',
      "    program.command('hello <who>').description('greets').addOption(configOption()).action((who, opts) => {",
      "      if (who === 'nobody') { const e = new Error('nobody to greet'); e.name = 'CommandError'; e.exitCode = 2; throw e; }",
      "      process.stdout.write(`hello ${who} from ${opts.config}\\n`);",
      '    });',
      '  },',
      '};',
      '',
    ].join('\n'),
    'yubin.yaml': 'dataDir: ./var\nlisteners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:0\n    plugins: [./plugins/hello.mjs]\n',
  });
  const config = path.join(dir, 'yubin.yaml');
  const r = await yubin(['hello', 'world', '-c', config]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, `hello world from ${config}\n`);
  const env = await yubin(['hello', 'env'], { env: { ...process.env, YUBIN_CONFIG: config } });
  t.equal(env.stdout, `hello env from ${config}\n`, 'the config named by YUBIN_CONFIG too');
  const help = await yubin(['--help', '-c', config]);
  t.match(help.stdout, /hello \[options\] <who>\s+greets/, 'listed in yubin --help');
  const bad = await yubin(['hello', 'nobody', '-c', config]);
  t.same([bad.code, bad.stderr], [2, 'yubin: nobody to greet\n'], "the plugin's usage error, one line, exit 2");
  const none = await yubin(['hello', 'world']);
  t.equal(none.code, 2, 'without that config the command does not exist');
});

t.test('SIGHUP: changed per-listener options reach new connections; a reload that breaks the order keeps the running config', async (t) => {
  const dir = await tempDir(t);
  await writeFiles(dir, {
    'tag.mjs': "export default { name: 'tag', setup: ({ options }) => ({ hooks: { data({ message }) { message.addHeader('X-Tag', options.value); return { action: 'continue' }; } } }) };\n",
    'tcp.smtp': '127.:allow\n',
  });
  const config = path.join(dir, 'yubin.yaml');
  const write = (value: string, first = 'tcprules', second = 'rblsmtpd') =>
    writeFile(
      config,
      `dataDir: ./var\nqueue: { concurrencyLocal: 0 }\n# nothing answers there: rblsmtpd fails open at once\ndns: { servers: ["127.0.0.1:9"], timeout: 200ms, tries: 1 }\nplugins:\n  tcprules: { file: ./tcp.smtp }\n  rblsmtpd: { zones: [bl.test] }\nlisteners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:0\n    plugins:\n      - ${first}\n      - ${second}\n      - ./tag.mjs: { value: ${value} }\n      - rcpthosts\n`,
    );
  await write('one');
  const server = await serve(t, config, 1);
  const sendOne = async () => {
    const c = await SmtpTestClient.connect(server.ports.smtp!);
    await c.ehlo();
    const r = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: x\n\nhello\n' });
    await c.quit();
    return /queued as (\w+)/.exec(r.data?.text ?? '')![1]!;
  };
  const spool = new Spool(path.join(dir, 'var/queue'));
  const tagOf = async (id: string) => (await spool.readEnvelope(id)).prependHeaders.match(/X-Tag: (\w+)/)?.[1];
  t.equal(await tagOf(await sendOne()), 'one');
  await write('two');
  server.child.kill('SIGHUP');
  await server.waitLog((l) => l.event === 'reload' && l.level === 30);
  t.equal(await tagOf(await sendOne()), 'two', 'the reloaded options');
  await write('three', 'rblsmtpd', 'tcprules');
  server.child.kill('SIGHUP');
  const failed = await server.waitLog((l) => l.event === 'reload' && l.level === 50);
  t.match(String(failed.err), /rblsmtpd must come after tcprules/);
  t.equal(await tagOf(await sendOne()), 'two', 'still the running config');
  t.equal(await server.stop(), 0);
});

t.test('a hook that throws is logged with its stack, plugin, hook and connection; a deliver fault is named in queue list', async (t) => {
  const dir = await tempDir(t);
  await writeFiles(dir, {
    'boom.mjs': [
      'export default {',
      "  name: 'boom',",
      '  setup: () => ({',
      '    hooks: {',
      "      rcpt({ recipient }) { if (recipient.local === 'boom') throw new Error('rcpt went boom'); return { action: 'continue' }; },",
      "      deliver() { throw new Error('disk on fire'); },",
      '    },',
      '  }),',
      '};',
      '',
    ].join('\n'),
  });
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(
    config,
    'dataDir: ./var\nqueue: { retry: [1h] }\ndelivery: { plugins: [./boom.mjs] }\nlisteners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:0\n    plugins: [./boom.mjs, rcpthosts]\n',
  );
  const server = await serve(t, config, 1);
  const c = await SmtpTestClient.connect(server.ports.smtp!);
  await c.ehlo();
  await c.command('MAIL FROM:<a@example.net>');
  const r = await c.command('RCPT TO:<boom@localhost>');
  t.same([r.code, r.enhanced], [451, '4.3.0']);
  const line = await server.waitLog((l) => l.plugin === 'boom' && l.hook === 'rcpt' && l.level === 50);
  t.equal(line.listener, 'smtp', 'names the listener');
  t.ok(line.conn, 'names the connection');
  t.match((line.err as { stack?: string } | undefined)?.stack, /rcpt went boom\n\s+at rcpt \(file:\/\/.*boom\.mjs:5:/, 'with the stack into the plugin');

  await c.command('RSET');
  const sent = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: x\n\nhello\n' });
  const id = /queued as (\w+)/.exec(sent.data?.text ?? '')![1]!;
  await c.quit();
  await server.waitLog((l) => l.plugin === 'boom' && l.hook === 'deliver');
  const deferral = await server.waitLog((l) => l.event === 'delivery' && l.id === id && l.result === 'deferral');
  t.match(deferral.text, /deliver plugin boom threw: disk on fire/, 'the deferral names the plugin');
  // The recipient's state reaches the spool right after the log line.
  let list = await yubin(['queue', 'list', '-c', config]);
  for (let i = 0; i < 20 && !list.stdout.includes('deliver plugin boom'); i++) {
    await new Promise((r) => setTimeout(r, 250));
    list = await yubin(['queue', 'list', '-c', config]);
  }
  t.equal(list.code, 0, list.stderr);
  t.match(list.stdout, /deliver plugin boom threw: disk on fire/, 'queue list names the plugin');
  t.equal(await server.stop(), 0);
});
