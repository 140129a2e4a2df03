/**
 * The files of a new plugin package (`yubin plugin new`), like
 * haraka-plugin-template: TypeScript, ESM, a zod options schema, a data hook
 * that does something real, and tap tests over a real server. Kept as strings
 * so they ship inside dist/. The generated code avoids template literals where
 * it can, so these templates need few escapes.
 */

export interface PluginTemplate {
  /** The npm package name, also the definition's name (how yubin.yaml keys its options). */
  readonly name: string;
  /** The running yubin-mail: its version (peer range) and directory (the file: dev dependency). */
  readonly yubinVersion: string;
  readonly yubinRoot: string;
  /** Ranges of the tools, as yubin-mail's own package.json has them. */
  readonly versions: { readonly typescript: string; readonly tap: string; readonly zod: string; readonly typesNode: string };
}

export function pluginPackageJson(t: PluginTemplate): string {
  const pkg = {
    name: t.name,
    version: '0.1.0',
    description: 'A yubin plugin: tags every message with a header and refuses listed subjects',
    type: 'module',
    license: 'MIT',
    keywords: ['yubin', 'yubin-plugin', 'smtp'],
    engines: { node: '>=20' },
    main: 'dist/src/index.js',
    types: 'dist/src/index.d.ts',
    exports: { '.': { types: './dist/src/index.d.ts', default: './dist/src/index.js' } },
    files: ['dist/src'],
    scripts: {
      build: 'tsc -p .',
      prepare: 'tsc -p .',
      test: 'tsc -p . && tap',
    },
    tap: {
      include: ['dist/test/**/*.test.js'],
      'disable-coverage': true,
      'allow-empty-coverage': true,
      plugin: ['!@tapjs/typescript'],
      // tap leaves out dist/ by default; the compiled tests live there.
      exclude: ['**/node_modules/**'],
    },
    // zod runs inside the plugin (its options schema): a dependency, not a dev one.
    dependencies: { zod: t.versions.zod },
    peerDependencies: { 'yubin-mail': `^${t.yubinVersion}` },
    devDependencies: {
      '@types/node': t.versions.typesNode,
      tap: t.versions.tap,
      typescript: t.versions.typescript,
      'yubin-mail': `file:${t.yubinRoot}`,
    },
  };
  return `${JSON.stringify(pkg, null, 2)}\n`;
}

export const PLUGIN_TSCONFIG = `{
  "compilerOptions": {
    "target": "ES2022",
    "module": "NodeNext",
    "moduleResolution": "NodeNext",
    "lib": ["ES2023"],
    "types": ["node"],
    "rootDir": ".",
    "outDir": "dist",
    "declaration": true,
    "sourceMap": true,
    "strict": true,
    "skipLibCheck": true,
    "forceConsistentCasingInFileNames": true
  },
  "include": ["src", "test"]
}
`;

export const PLUGIN_GITIGNORE = `node_modules/
dist/
`;

export function pluginIndex(t: PluginTemplate): string {
  return `/**
 * ${t.name}: a yubin plugin. Adds a header to every message it sees and
 * refuses messages whose Subject contains a listed word.
 *
 * A plugin module's default export is one definition: a name, an options
 * schema and \`setup\`, which returns the hooks it serves (connect, helo, auth,
 * mail, rcpt, data, queue, deliver, verify). Each hook gets a typed context
 * and returns an answer:
 *
 *   answer.continue()                      no objection: the next plugin decides
 *   answer.accept(text?)                   accept, skip the rest of this hook's plugins
 *   answer.reject(5xx, '5.x.x', text)      permanent refusal
 *   answer.defer(4xx, '4.x.x', text)       temporary refusal: the sender retries
 *   answer.disconnect(text, '4.x.x')       421 and close
 *   answer.discard(text?)                  accept and deliver nowhere
 *
 * The types only admit codes that fit (reject takes a 5xx code and a 5.x.x
 * enhanced code). A hook that throws or times out gives the client 451 4.3.0
 * and a log line naming the plugin: never an accept.
 */
import { z } from 'zod';
import { answer, definePlugin } from 'yubin-mail';

/**
 * The options block from yubin.yaml, checked when the config is loaded: a
 * wrong type or an unknown key is an error naming the file and line, before
 * any mail is taken. In yubin.yaml the block is keyed by the name the
 * listener uses, the package name:
 *
 *   plugins:
 *     ${t.name}: { tag: mx, refuseSubjects: [SPAM] }
 */
const options = z.strictObject({
  /** The header's value. */
  tag: z.string().min(1).default('tagged'),
  /** The header's name. */
  header: z
    .string()
    .regex(/^[A-Za-z0-9-]+$/, 'a header name (letters, digits, -)')
    .default('X-Tag'),
  /** Messages whose Subject contains one of these (case-insensitive) are refused. */
  refuseSubjects: z.array(z.string().min(1)).default([]),
});

export default definePlugin({
  // How logs name the plugin, and how the test harness keys its options.
  name: '${t.name}',
  options,
  setup({ options, log }) {
    // setup runs once at start and again on SIGHUP (reload): prepare here, not per message.
    const refused = options.refuseSubjects.map((s) => s.toLowerCase());
    log.info({ tag: options.tag, header: options.header, refuseSubjects: refused.length }, 'ready');
    return {
      hooks: {
        // The data hook runs after the final dot, with the whole message received:
        // headers can be read and added, and the answer is the reply to DATA.
        data({ message }) {
          const subject = message.header('Subject').join(' ').toLowerCase();
          const hit = refused.find((word) => subject.includes(word));
          if (hit !== undefined) {
            return answer.reject(550, '5.7.1', 'message refused by ' + options.tag + ': subject contains "' + hit + '"');
          }
          message.addHeader(options.header, options.tag);
          // continue, not accept: the plugins after this one (virus and spam checks) still decide.
          return answer.continue();
        },
      },
    };
  },
});
`;
}

export function pluginTest(t: PluginTemplate): string {
  return `/**
 * Tests over a real server: startTestServer runs yubin on an ephemeral
 * loopback port with the plugins given (a definition inline, or a built-in by
 * name), holds the queue so queued() shows what was accepted, and gives an
 * SMTP client that speaks the protocol line by line.
 */
import t from 'tap';
import { startTestServer } from 'yubin-mail/testing';
import tag from '../src/index.js';

t.test('adds the header to every message', async (t) => {
  const server = await startTestServer({
    plugins: [tag],
    // Keyed by the definition's name, as yubin.yaml keys the package's options.
    pluginOptions: { [tag.name]: { tag: 'mx' } },
  });
  t.teardown(() => server.close());
  const client = await server.connect();
  await client.ehlo();
  const r = await client.mail({ from: 'alice@example.net', to: 'postmaster@localhost', data: 'Subject: hello\\n\\nhi\\n' });
  t.equal(r.data?.code, 250, 'accepted');
  const queued = await server.queued();
  t.equal(queued.length, 1);
  t.match(queued[0]!.text, /^X-Tag: mx\\r?$/m, 'the header is on the queued message');
});

t.test('refuses a listed subject with 550 5.7.1', async (t) => {
  const server = await startTestServer({
    plugins: [tag],
    pluginOptions: { [tag.name]: { tag: 'mx', refuseSubjects: ['SPAM'] } },
  });
  t.teardown(() => server.close());
  const client = await server.connect();
  await client.ehlo();
  const r = await client.mail({ from: 'alice@example.net', to: 'postmaster@localhost', data: 'Subject: Cheap spam here\\n\\nbuy\\n' });
  t.equal(r.data?.code, 550);
  t.equal(r.data?.enhanced, '5.7.1');
  t.match(r.data?.text, /mx/, 'the reply names the tag');
  t.equal((await server.queued()).length, 0, 'nothing queued');
});
`;
}

export function pluginReadme(t: PluginTemplate, dirName: string): string {
  return `# ${t.name}

A [yubin](https://www.npmjs.com/package/yubin-mail) plugin. On the data hook
(after the final dot) it adds a header to every message, and refuses with
\`550 5.7.1\` a message whose Subject contains one of the listed words
(case-insensitive). Made with \`yubin plugin new\`; change \`src/index.ts\` into
what your plugin does.

## Options

| option | default | meaning |
|---|---|---|
| \`tag\` | \`tagged\` | the header's value; named in the refusal text |
| \`header\` | \`X-Tag\` | the header's name |
| \`refuseSubjects\` | \`[]\` | words whose presence in the Subject gets \`550 5.7.1\` |

## Use it in yubin.yaml

In a site made with \`yubin init DIR\`:

\`\`\`sh
cd DIR && npm install ${t.name}      # or: npm install /path/to/${dirName}
\`\`\`

Options go in the top-level \`plugins:\` block, keyed by the package name,
and a listener runs the plugin where its \`plugins\` list names it, in that
order. A list entry may carry options for that listener only, merged over
the top-level block:

\`\`\`yaml
plugins:
  ${t.name}: { header: X-Tag }
listeners:
  - name: mx
    protocol: smtp
    listen: 0.0.0.0:25
    plugins:
      - tcprules
      - rcpthosts
      - ${t.name}: { tag: mx, refuseSubjects: [SPAM] }
      - vpopmail
  - name: submission
    protocol: smtp
    listen: 0.0.0.0:587
    requireAuth: true
    plugins:
      - vpopmail
      - ${t.name}: { tag: submission }
\`\`\`

Each distinct set of options is one instance of the plugin (one \`setup\`).
\`yubin check-config -c DIR/yubin.yaml\` loads the plugin, checks its options
and lists its hooks and each listener's options.

## Test

\`\`\`sh
npm install
npm test          # tsc, then tap on dist/test/*.test.js
\`\`\`

npm 11 may warn that yubin-mail's \`prepare\` is not covered by \`allowScripts\`:
it is not needed, the yubin linked from \`file:\` is already built.

The tests start a real yubin on an ephemeral loopback port with
\`startTestServer\` from \`yubin-mail/testing\`, talk SMTP to it and look at
what it queued.

## ESM only

This is an ES module (\`"type": "module"\`), as yubin is: yubin loads plugins
with \`import()\`. Import paths inside the package end in \`.js\`.

## Publishing

yubin-mail is a peer dependency (\`^${t.yubinVersion}\`): the site's yubin is
the one the plugin runs in. For development it comes from the yubin that made
this package, \`"yubin-mail": "file:${t.yubinRoot}"\` in devDependencies;
once yubin-mail is on the registry, change that to a version range
(\`"^${t.yubinVersion}"\`). Then \`npm publish\` (\`prepare\` builds \`dist/\`; only
\`dist/src\` is packed). Name it \`yubin-plugin-*\` so it can be found.
`;
}
