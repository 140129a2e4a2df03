/**
 * yubin tried as a new user would, end to end: `npm pack`, a global install
 * into an empty prefix, `yubin init site --loopback`, `yubin plugin new` with
 * its own `npm test` green, the plugin installed into the site with npm and
 * listed on two listeners with different options, the server started from
 * the site, swaks showing both behaviours, check-config printing both
 * options, a wrong order and an unused options block refused with file:line,
 * and a hook that never answers seeing its signal fire at the timeout.
 */
import { execFileSync } from 'node:child_process';
import { cp, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { isMap, isSeq, parseDocument, type YAMLMap, type YAMLSeq } from 'yaml';
import { freePort, needs, ROOT, run, serve, tempDir, type RunResult } from './helpers.js';

// npm installs and a compile-free global install take minutes, not the usual 3.
t.setTimeout(20 * 60_000);

const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };

async function npm(t: Test, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  const r = await run('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, env: { ...process.env, ...env }, timeout: 10 * 60_000 });
  if (r.code !== 0) t.fail(`npm ${args.join(' ')} in ${cwd}: exit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r;
}

/**
 * better-sqlite3's own prebuilt binary, handed to prebuild-install the way its
 * "local prebuilds" option allows: the global install then does not compile
 * SQLite for two minutes (there is no download from GitHub here). The binary
 * is the one `npm ci` built for this checkout; should npm pick another
 * version for the global install, prebuild-install does not find it and
 * compiles, which is slower but the same test.
 */
async function localPrebuilds(dir: string): Promise<NodeJS.ProcessEnv> {
  const bs = JSON.parse(await readFile(path.join(ROOT, 'node_modules/better-sqlite3/package.json'), 'utf8')) as { version: string };
  const name = `better-sqlite3-v${bs.version}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`;
  await mkdir(dir, { recursive: true });
  execFileSync('tar', ['-czf', path.join(dir, name), '-C', path.join(ROOT, 'node_modules/better-sqlite3'), 'build/Release/better_sqlite3.node']);
  return { npm_config_better_sqlite3_local_prebuilds: dir };
}

function listener(doc: ReturnType<typeof parseDocument>, test: (l: Record<string, unknown>) => boolean): YAMLMap {
  const seq = doc.get('listeners') as YAMLSeq;
  const found = seq.items.find((item) => isMap(item) && test((item as YAMLMap).toJSON() as Record<string, unknown>));
  if (!found) throw new Error('no such listener in the site config');
  return found as YAMLMap;
}

t.test('a new user: pack, global install, init, plugin new, npm install, serve, swaks', needs('swaks', 'npm', 'tar'), async (t) => {
  const root = await tempDir(t, 'yubin-newuser-');

  // 1. npm pack from a copy of the sources: its `prepare` builds dist/ (the checkout's own dist is in use by other tests).
  const src = path.join(root, 'src');
  await mkdir(src);
  for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'README.md', 'core', 'plugins', 'config']) await cp(path.join(ROOT, f), path.join(src, f), { recursive: true });
  await symlink(path.join(ROOT, 'node_modules'), path.join(src, 'node_modules'));
  const packed = await npm(t, ['pack', '--pack-destination', root], src);
  const tarball = path.join(root, packed.stdout.trim().split('\n').pop()!);
  t.equal(path.basename(tarball), `${pkg.name}-${pkg.version}.tgz`, 'packed under the name yubin-mail');

  // 2. a global install into an empty prefix.
  const prefix = path.join(root, 'prefix');
  await npm(t, ['install', '-g', '--prefix', prefix, tarball], root, await localPrebuilds(path.join(root, 'prebuilds')));
  const bin = path.join(prefix, 'bin/yubin');
  const installed = path.join(prefix, 'lib/node_modules', pkg.name);
  const cli = path.join(installed, 'dist/core/cli.js');
  const help = await run(bin, ['--help']);
  t.equal(help.code, 0, help.stderr);
  t.match(help.stdout, /Usage: yubin/);
  t.match(help.stdout, /init \[options\] <dir>/);
  const noConfig = await run(bin, ['serve'], { cwd: root });
  t.equal(noConfig.code, 2, 'installed, without a config: exit 2');
  t.match(noConfig.stderr, /no config file: .*yubin init DIR/);
  t.notOk((await readdir(installed)).includes('var'), 'and nothing written into the package directory');

  // 3. a site.
  const init = await run(bin, ['init', 'site', '--loopback'], { cwd: root });
  t.equal(init.code, 0, init.stderr);
  const site = path.join(root, 'site');
  for (const f of ['yubin.yaml', 'package.json', 'plugins']) t.ok((await readdir(site)).includes(f), `site/${f}`);

  // 4. a plugin from the template, green on its own tests.
  const work = path.join(root, 'work');
  await mkdir(work);
  const made = await run(bin, ['plugin', 'new', 'yubin-plugin-tag'], { cwd: work });
  t.equal(made.code, 0, made.stderr);
  const pluginDir = path.join(work, 'yubin-plugin-tag');
  await npm(t, ['install'], pluginDir);
  const test = await npm(t, ['test'], pluginDir);
  t.match(test.stdout, /\nok 1 - dist\/test\/index\.test\.js/, "the template's npm test passes");
  t.notMatch(test.stdout, /not ok/);

  // 5. installed into the site with npm, as a packed package.
  const pluginPack = await npm(t, ['pack', '--pack-destination', work], pluginDir);
  await npm(t, ['install', path.join(work, pluginPack.stdout.trim().split('\n').pop()!)], site);

  // 6. listed on two listeners with different options; a local plugin that never answers on a third place.
  await writeFile(
    path.join(site, 'plugins/hang.js'),
    [
      "import { writeFileSync } from 'node:fs';",
      "import { answer } from 'yubin-mail';",
      'export default {',
      "  name: 'hang',",
      '  setup: ({ dataDir }) => ({',
      '    hooks: {',
      '      rcpt({ recipient, signal }) {',
      "        if (recipient.local !== 'hang') return answer.continue();",
      '        const started = Date.now();',
      '        return new Promise(() => {',
      "          signal.addEventListener('abort', () => writeFileSync(`${dataDir}/hang-signal.json`, JSON.stringify({ after: Date.now() - started, reason: String(signal.reason?.message ?? signal.reason) })));",
      '        });',
      '      },',
      '    },',
      '  }),',
      '};',
      '',
    ].join('\n'),
  );
  const configFile = path.join(site, 'yubin.yaml');
  const doc = parseDocument(await readFile(configFile, 'utf8'));
  const listeners = doc.get('listeners') as YAMLSeq;
  for (const item of listeners.items as YAMLMap[]) {
    const host = String(item.get('listen')).replace(/:\d+$/, '');
    item.set('listen', `${host}:${await freePort()}`);
  }
  const mx = listener(doc, (l) => l.protocol === 'smtp' && !l.requireAuth && l.tls !== 'implicit');
  const submission = listener(doc, (l) => l.protocol === 'smtp' && l.requireAuth === true && l.tls === 'starttls');
  (mx.get('plugins') as YAMLSeq).add(doc.createNode({ 'yubin-plugin-tag': { tag: 'mx', refuseSubjects: ['SPAM'] } }));
  // First, so no other plugin answers for hang@ before it.
  (mx.get('plugins') as YAMLSeq).items.unshift(doc.createNode('./plugins/hang.js'));
  (submission.get('plugins') as YAMLSeq).add(doc.createNode({ 'yubin-plugin-tag': { tag: 'submission' } }));
  doc.set('hookTimeout', '1500ms');
  await writeFile(configFile, doc.toString());

  const y = (...args: string[]) => run(bin, [...args, '-c', site]);
  t.equal((await y('domain', 'add', 'example.test')).code, 0);
  t.equal((await y('user', 'add', 'alice@example.test', '--password', 'wonderland-7')).code, 0);

  // 7. check-config prints both effective options.
  const check = await run(bin, ['check-config', '-c', configFile]);
  t.equal(check.code, 0, check.stderr);
  t.match(check.stdout, /yubin-plugin-tag \[package\] hooks: data; options \{"tag":"mx","refuseSubjects":\["SPAM"\]\}/);
  t.match(check.stdout, /yubin-plugin-tag \[package\] hooks: data; options \{"tag":"submission"\}/);

  // 8. a wrong order and an unused options block: exit 2 with file:line.
  const bad = parseDocument(doc.toString());
  const badMx = listener(bad, (l) => l.name === mx.get('name'));
  const list = badMx.get('plugins') as YAMLSeq;
  const names = list.items.map((i) => (isMap(i) ? String((i as YAMLMap).items[0]!.key) : String((i as { value?: unknown }).value ?? i)));
  t.ok(names.indexOf('rblsmtpd') > names.indexOf('tcprules') && names.includes('tcprules'), 'the site lists tcprules before rblsmtpd');
  const [tcprules] = list.items.splice(names.indexOf('tcprules'), 1);
  list.items.splice(names.indexOf('rblsmtpd'), 0, tcprules!);
  await writeFile(path.join(site, 'order.yaml'), bad.toString());
  const order = await run(bin, ['check-config', '-c', path.join(site, 'order.yaml')]);
  t.equal(order.code, 2);
  t.match(order.stderr, /order\.yaml:\d+: listeners\[\d+\]\(\w+\)\.plugins\[\d+\]: rblsmtpd must come after tcprules/);
  const unused = parseDocument(doc.toString());
  unused.setIn(['plugins', 'spamassasin'], unused.createNode({ rejectScore: 8 }));
  await writeFile(path.join(site, 'unused.yaml'), unused.toString());
  const typo = await run(bin, ['check-config', '-c', path.join(site, 'unused.yaml')]);
  t.equal(typo.code, 2);
  t.match(typo.stderr, /unused\.yaml:\d+: plugins\.spamassasin: options for a plugin no listener or delivery lists/);

  // 5 (again). the server starts from the site, with the installed yubin.
  const server = await serve(t, site, listeners.items.length, [], cli);
  const mxPort = server.ports[String(mx.get('name'))]!;
  const subPort = server.ports[String(submission.get('name'))]!;
  const swaks = (port: number, subject: string, extra: string[] = []) =>
    run('swaks', ['--server', `127.0.0.1:${port}`, '--from', 'friend@example.net', '--to', 'alice@example.test', '--header', `Subject: ${subject}`, ...extra]);

  // 6 (again). swaks shows the two behaviours.
  const refused = await swaks(mxPort, 'SPAM offer');
  t.match(refused.stdout, /<\*\* +550 5\.7\.1 .*by mx/, 'on mx, a SPAM subject is refused by the plugin with its tag');
  const passed = await swaks(mxPort, 'hello from mx');
  t.match(passed.stdout, /<- {2}250 .*queued as/);
  const auth = ['--tls', '--auth', 'PLAIN', '--auth-user', 'alice@example.test', '--auth-password', 'wonderland-7'];
  const sub = await run('swaks', ['--server', `127.0.0.1:${subPort}`, '--from', 'alice@example.test', '--to', 'alice@example.test', '--header', 'Subject: SPAM, says the submission', ...auth]);
  t.match(sub.stdout, /<~ {2}250 .*queued as/, 'on submission the same subject passes: other options');
  await server.waitLog((l) => l.event === 'delivery' && typeof l.id === 'string' && sub.stdout.includes(l.id), 20_000);
  const box = path.join(site, 'var/domains/example.test/alice/Maildir/new');
  const texts = await Promise.all((await readdir(box)).map((f) => readFile(path.join(box, f), 'utf8')));
  t.same(texts.map((m) => /^X-Tag: (.*)$/m.exec(m)?.[1]).sort(), ['mx', 'submission'], 'each message tagged by its listener');

  // 9. a hook that never answers: the signal fires at hookTimeout, the client gets 451 4.3.0.
  const hang = await run('swaks', ['--server', `127.0.0.1:${mxPort}`, '--from', 'friend@example.net', '--to', 'hang@example.test', '--quit-after', 'RCPT']);
  t.match(hang.stdout, /<\*\* +451 4\.3\.0 /);
  const fired = JSON.parse(await readFile(path.join(site, 'var/hang-signal.json'), 'utf8')) as { after: number; reason: string };
  t.ok(fired.after >= 1400 && fired.after < 3000, `the signal fired after ${fired.after} ms (hookTimeout 1500 ms)`);
  t.match(fired.reason, /time/i, `its reason says it timed out: ${fired.reason}`);
  t.equal(await server.stop(), 0);
  t.ok(isSeq(listeners));
});
