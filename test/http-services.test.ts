/**
 * Plugins serving HTTP on `protocol: http` listeners (`serve: [metrics, NAME]`):
 * their routes next to /metrics, each in its own scope, replaced by a reload
 * without closing the socket, and config errors that name the problem.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { z } from 'zod';
import { loadConfig } from '../core/config/load.js';
import { createLogger } from '../core/logger.js';
import { definePlugin, type PluginDefinition } from '../core/plugin.js';
import { YubinServer } from '../core/server.js';
import { tempDir } from './helpers.js';

const closed: string[] = [];

/** Says hello with its option; adds a header to its own routes only; refuses a listener when told to. */
const hello = definePlugin({
  name: 'hello',
  options: z.strictObject({ greeting: z.string().default('hello'), refuse: z.boolean().default(false) }),
  setup({ options, config }) {
    return {
      hooks: {},
      http: {
        routes(app, listener) {
          if (options.refuse) throw new Error(`refusing ${listener.https ? 'HTTPS' : 'plain HTTP'}`);
          app.addHook('onSend', async (_request, reply) => void reply.header('x-hello', '1'));
          app.get('/hello', async () => `${options.greeting} from ${listener.name} (loopback only: ${listener.loopbackOnly}), hostname ${config.hostname}\n`);
        },
      },
      close: () => void closed.push(options.greeting),
    };
  },
}) as PluginDefinition<unknown>;

const CONFIG = (greeting: string, extra = '') => `hostname: mx.test
dataDir: ./var
queue: { concurrencyLocal: 0, concurrencyRemote: 0 }
plugins:
  hello: { greeting: ${greeting}${extra} }
listeners:
  - { name: web, protocol: http, listen: "127.0.0.1:0", serve: [metrics, hello] }
`;

async function start(dir: string, text: string) {
  const file = path.join(dir, 'yubin.yaml');
  await writeFile(file, text);
  const log = createLogger({ level: 'fatal', format: 'json' });
  return { file, server: await YubinServer.start(await loadConfig(file), { log, inlinePlugins: new Map([['hello', hello]]) }) };
}

t.test('a plugin serves routes beside /metrics, in its own scope; a reload swaps them on the same socket', async (t) => {
  const dir = await tempDir(t);
  const { file, server } = await start(dir, CONFIG('hello'));
  t.teardown(() => server.close());
  const base = `http://127.0.0.1:${server.addresses().web!.port}`;
  const first = await fetch(`${base}/hello`);
  t.equal(first.status, 200);
  t.equal(await first.text(), 'hello from web (loopback only: true), hostname mx.test\n');
  t.equal(first.headers.get('x-hello'), '1');
  const metrics = await fetch(`${base}/metrics`);
  t.equal(metrics.status, 200);
  t.match(await metrics.text(), /process_cpu_user_seconds_total/);
  t.equal(metrics.headers.get('x-hello'), null, "the plugin's hook stays in its scope");
  t.equal((await fetch(`${base}/nothing`)).status, 404);

  await writeFile(file, CONFIG('konnichiwa'));
  t.equal(await server.reload(), true);
  t.equal(await (await fetch(`${base}/hello`)).text(), 'konnichiwa from web (loopback only: true), hostname mx.test\n', 'the new options, same port');
  t.same(closed, ['hello'], 'the old instance was closed once its app was retired');

  // A service that refuses the listener fails the reload; the running routes stay.
  await writeFile(file, CONFIG('hola', ', refuse: true'));
  t.equal(await server.reload(), false);
  t.equal(await (await fetch(`${base}/hello`)).text(), 'konnichiwa from web (loopback only: true), hostname mx.test\n');
  t.same(closed, ['hello', 'hola'], 'the refused configuration was closed');

  // serve without the plugin: its routes are gone.
  await writeFile(file, CONFIG('x').replace('serve: [metrics, hello]', 'serve: [metrics]').replace(/plugins:\n.*\n/, ''));
  t.equal(await server.reload(), true);
  t.equal((await fetch(`${base}/hello`)).status, 404);
  t.equal((await fetch(`${base}/metrics`)).status, 200);
});

t.test('start-up refusals and config errors name the listener, the service and the problem', async (t) => {
  const dir = await tempDir(t);
  // A config problem at the serve entry, as check-config reports it.
  await t.rejects(start(dir, CONFIG('hi', ', refuse: true')), { name: 'ConfigError', message: /yubin\.yaml:\d+: listeners\[0\]\(web\)\.serve\[1\]: hello: refusing plain HTTP/ });
  await t.rejects(start(dir, CONFIG('hi').replace('serve: [metrics, hello]', 'serve: [metrics, webmial]').replace(/plugins:\n.*\n/, '')), /serve\[1\].*unknown plugin "webmial"/);
  await t.rejects(start(dir, CONFIG('hi').replace('serve: [metrics, hello]', 'serve: [rcpthosts]').replace(/plugins:\n.*\n/, '')), /serve\[0\].*plugin rcpthosts serves no HTTP/);
});
