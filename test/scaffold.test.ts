/** `yubin init DIR` and `yubin plugin new NAME`: what they write, and that it works as written. */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { parse, stringify } from 'yaml';
import { initSite } from '../core/scaffold/site.js';
import { freePort, ROOT, serve, tempDir, yubin } from './helpers.js';

const rootPkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
const root = path.resolve(ROOT);

const SITE_FILES = ['yubin.yaml', 'tcp.smtp', 'whitelist.txt', 'badmailfrom', 'rcpthosts', 'plugins/README.md', 'package.json', '.gitignore'];

/** The first line the server sends. */
function greeting(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host);
    let buf = '';
    socket.setTimeout(10_000, () => socket.destroy(new Error('no greeting')));
    socket.on('data', (d: Buffer) => {
      buf += d.toString();
      const i = buf.indexOf('\r\n');
      if (i >= 0) {
        socket.end('QUIT\r\n');
        resolve(buf.slice(0, i));
      }
    });
    socket.on('error', reject);
  });
}

interface RawListener {
  name: string;
  listen: string;
}

/**
 * The site's config with every listener on 127.0.0.1 and a port the system
 * picks, and DNS pointed at a closed loopback port: the test binds nothing
 * fixed and sends nothing off the machine. Written beside yubin.yaml so its
 * relative paths mean the same.
 */
async function testConfig(dir: string): Promise<{ file: string; listeners: RawListener[] }> {
  const raw = parse(await readFile(path.join(dir, 'yubin.yaml'), 'utf8')) as { listeners: RawListener[]; dns: Record<string, unknown> };
  for (const l of raw.listeners) l.listen = '127.0.0.1:0';
  raw.dns = { ...raw.dns, servers: ['127.0.0.1:9'], timeout: '1s' };
  const file = path.join(dir, 'yubin.test.yaml');
  await writeFile(file, stringify(raw));
  return { file, listeners: raw.listeners };
}

t.test('init --loopback writes a site that passes check-config and serves SMTP', async (t) => {
  const dir = path.join(await tempDir(t), 'mysite');
  const r = await yubin(['init', dir, '--loopback']);
  t.equal(r.code, 0, r.stderr);
  for (const f of SITE_FILES) t.ok(existsSync(path.join(dir, f)), `${f} written`);
  t.ok(existsSync(path.join(dir, 'var')), 'dataDir made');
  t.ok(existsSync(path.join(dir, 'whitelist')), 'whitelist/ made');
  t.match(r.stdout, /yubin serve -c .*yubin\.yaml/);
  t.match(r.stdout, /yubin check-config -c /);
  t.match(r.stdout, /npm install yubin-plugin-/);

  const text = await readFile(path.join(dir, 'yubin.yaml'), 'utf8');
  const config = parse(text) as { dataDir: string; listeners: RawListener[] };
  t.equal(config.dataDir, './var');
  t.same(
    config.listeners.map((l) => l.listen),
    ['127.0.0.1:2525', '127.0.0.1:2587', '127.0.0.1:2465', '127.0.0.1:2110', '127.0.0.1:2995', '127.0.0.1:2080'],
  );
  t.match(text, /# \.\/plugins\/my-check\.js:/, 'a commented local plugin');
  t.match(text, /# yubin-plugin-NAME:/, 'a commented npm plugin');

  const pkg = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8')) as Record<string, unknown>;
  t.equal(pkg.name, 'mysite');
  t.equal(pkg.private, true);
  t.equal(pkg.type, 'module');
  t.same(pkg.dependencies, { 'yubin-mail': `file:${root}` });
  t.match(await readFile(path.join(dir, '.gitignore'), 'utf8'), /^var\/$/m);

  const check = await yubin(['check-config', '-c', path.join(dir, 'yubin.yaml')]);
  t.equal(check.code, 0, check.stderr);
  t.match(check.stdout, new RegExp(`dataDir ${path.join(dir, 'var').replace(/[/.]/g, '\\$&')}`));

  const { file, listeners } = await testConfig(dir);
  const server = await serve(t, file, listeners.length);
  t.match(await greeting(server.ports.mx!), /^220 /, 'mx greets');
  t.match(await greeting(server.ports.pop3!), /^\+OK/, 'pop3 greets');
  t.equal(await server.stop('SIGTERM'), 0, 'SIGTERM: exit 0');
});

t.test('init writes the production layout, which passes check-config', async (t) => {
  const dir = path.join(await tempDir(t), 'prod');
  const r = await yubin(['init', dir]);
  t.equal(r.code, 0, r.stderr);
  const config = parse(await readFile(path.join(dir, 'yubin.yaml'), 'utf8')) as { listeners: RawListener[] };
  const ports = config.listeners.filter((l) => l.listen.startsWith('0.0.0.0:')).map((l) => l.listen);
  t.same(ports, ['0.0.0.0:25', '0.0.0.0:587', '0.0.0.0:465', '0.0.0.0:110', '0.0.0.0:995']);
  const check = await yubin(['check-config', '-c', path.join(dir, 'yubin.yaml')]);
  t.equal(check.code, 0, check.stderr);
  t.match(check.stdout, /1\. tcprules .*\n.*2\. whitelist .*\n.*3\. badmailfrom .*\n.*4\. rcpthosts .*\n.*5\. rblsmtpd .*\n.*6\. spamdyke /, 'the qmail anti-spam order');

  // Every plugin the production listeners name starts (with loopback addresses for the test).
  const { file, listeners } = await testConfig(dir);
  const server = await serve(t, file, listeners.length);
  t.match(await greeting(server.ports.mx!), /^220 /);
  t.equal(await server.stop('SIGTERM'), 0);
});

t.test('the production layout has IPv6 listeners on [::] beside the IPv4 ones, and both bind', async (t) => {
  const dir = path.join(await tempDir(t), 'v6');
  await initSite(dir);
  const config = parse(await readFile(path.join(dir, 'yubin.yaml'), 'utf8')) as { listeners: RawListener[]; dns: Record<string, unknown> };
  t.same(
    config.listeners.filter((l) => l.listen.startsWith('[::]')).map((l) => `${l.name} ${l.listen}`),
    ['mx6 [::]:25', 'submission6 [::]:587', 'submissions6 [::]:465', 'pop36 [::]:110', 'pop3s6 [::]:995'],
  );
  // 0.0.0.0:P and [::]:P in one config (Linux's default would refuse the second bind):
  // the server binds [::] IPv6-only, so each family reaches its own listener.
  const port = await freePort();
  const mx = config.listeners.find((l) => l.name === 'mx')!;
  const mx6 = config.listeners.find((l) => l.name === 'mx6')!;
  mx.listen = `0.0.0.0:${port}`;
  mx6.listen = `[::]:${port}`;
  config.listeners = [mx, mx6];
  config.dns = { ...config.dns, servers: ['127.0.0.1:9'], timeout: '1s' };
  const file = path.join(dir, 'both.yaml');
  await writeFile(file, stringify(config));
  const server = await serve(t, file, 2);
  t.same([server.ports.mx, server.ports.mx6], [port, port]);
  t.match(await greeting(port), /^220 /, 'IPv4 client');
  t.match(await greeting(port, '::1'), /^220 /, 'IPv6 client');
  const conns = server.logs.filter((l) => l.event === 'connect').map((l) => l.listener);
  t.ok(conns.includes('mx') && conns.includes('mx6'), `each family on its own listener: ${conns.join(', ')}`);
  t.equal(await server.stop('SIGTERM'), 0);
});

t.test('init refuses to overwrite yubin.yaml or package.json without --force', async (t) => {
  const dir = path.join(await tempDir(t), 'site');
  t.equal((await yubin(['init', dir, '--loopback'])).code, 0);
  const again = await yubin(['init', dir, '--loopback']);
  t.equal(again.code, 2);
  t.equal(again.stderr, `yubin: ${path.join(dir, 'yubin.yaml')} exists; use --force to overwrite it\n`);
  await rm(path.join(dir, 'yubin.yaml'));
  const pkg = await yubin(['init', dir]);
  t.equal(pkg.code, 2);
  t.match(pkg.stderr, `${path.join(dir, 'package.json')} exists`);
  t.notOk(existsSync(path.join(dir, 'yubin.yaml')), 'nothing written on refusal');
  const forced = await yubin(['init', dir, '--force']);
  t.equal(forced.code, 0, forced.stderr);
  t.match(await readFile(path.join(dir, 'yubin.yaml'), 'utf8'), /0\.0\.0\.0:25/);
});

t.test('plugin new writes a TypeScript package for the running yubin', async (t) => {
  const cwd = await tempDir(t);
  const r = await yubin(['plugin', 'new', 'yubin-plugin-tag'], { cwd });
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, '', 'no warning for a yubin-plugin- name');
  const dir = path.join(cwd, 'yubin-plugin-tag');
  for (const f of ['package.json', 'tsconfig.json', 'src/index.ts', 'test/index.test.ts', 'README.md', '.gitignore']) t.ok(existsSync(path.join(dir, f)), `${f} written`);
  const pkg = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8')) as {
    name: string;
    version: string;
    type: string;
    scripts: Record<string, string>;
    tap: Record<string, unknown>;
    dependencies: Record<string, string>;
    peerDependencies: Record<string, string>;
    devDependencies: Record<string, string>;
  };
  t.equal(pkg.name, 'yubin-plugin-tag');
  t.equal(pkg.version, '0.1.0');
  t.equal(pkg.type, 'module');
  t.equal(pkg.scripts.test, 'tsc -p . && tap');
  t.same(pkg.tap.include, ['dist/test/**/*.test.js']);
  t.same(pkg.tap.exclude, ['**/node_modules/**'], 'dist/ not excluded (tap leaves it out by default)');
  t.same(pkg.peerDependencies, { 'yubin-mail': `^${rootPkg.version}` });
  t.equal(pkg.devDependencies['yubin-mail'], `file:${root}`);
  t.equal(pkg.devDependencies.typescript, rootPkg.devDependencies.typescript);
  t.equal(pkg.devDependencies.tap, rootPkg.devDependencies.tap);
  t.equal(pkg.devDependencies['@types/node'], rootPkg.devDependencies['@types/node']);
  t.equal(pkg.dependencies.zod, rootPkg.dependencies.zod);
  const index = await readFile(path.join(dir, 'src/index.ts'), 'utf8');
  t.match(index, "name: 'yubin-plugin-tag'");
  t.match(index, "from 'yubin-mail'");
  t.match(await readFile(path.join(dir, 'test/index.test.ts'), 'utf8'), "from 'yubin-mail/testing'");
});

t.test('plugin new: a scoped name, a name without the prefix, a bad name, a non-empty directory', async (t) => {
  const cwd = await tempDir(t);
  const scoped = await yubin(['plugin', 'new', '@acme/yubin-plugin-x'], { cwd });
  t.equal(scoped.code, 0, scoped.stderr);
  t.equal(scoped.stderr, '');
  t.ok(existsSync(path.join(cwd, 'yubin-plugin-x/package.json')), 'the directory is the name without its scope');

  const plain = await yubin(['plugin', 'new', 'tagger', 'elsewhere'], { cwd });
  t.equal(plain.code, 0, plain.stderr);
  t.match(plain.stderr, /^yubin: warning: tagger does not start with yubin-plugin-/);
  t.ok(existsSync(path.join(cwd, 'elsewhere/src/index.ts')));

  for (const bad of ['Yubin-Plugin-Tag', 'yubin plugin', '.hidden', '@scope/']) {
    const r = await yubin(['plugin', 'new', bad], { cwd });
    t.equal(r.code, 2, `${bad}: exit 2`);
    t.match(r.stderr, /^yubin: ".*" is not a valid npm package name: .*\n$/);
  }

  const full = path.join(cwd, 'full');
  await mkdir(full);
  await writeFile(path.join(full, 'keep.txt'), 'mine\n');
  const r = await yubin(['plugin', 'new', 'yubin-plugin-y', full], { cwd });
  t.equal(r.code, 2);
  t.equal(r.stderr, `yubin: ${full} is not empty\n`);
  t.equal(await readFile(path.join(full, 'keep.txt'), 'utf8'), 'mine\n');
});
