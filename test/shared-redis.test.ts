/**
 * Several nodes, one site (issue 17, part 2): two yubin servers on loopback
 * sharing one real redis-server, as two MX/POP3 hosts behind one name.
 *
 * - The login throttle: guesses spread over both nodes, over SMTP AUTH and
 *   POP3 (Python's smtplib and poplib), are locked out after lockoutAfter in
 *   total; the user from a network she logged in from (at the other node)
 *   is not.
 * - maxConnectionsPerIp holds across both nodes; a node killed with -9
 *   (a real `yubin serve` process) leaves no count behind after nodeTimeout.
 * - ratelimit: 10 messages a minute per sender across both nodes; the 11th
 *   gets 451 4.7.1 on either.
 * - redis-server killed by its PID: each feature does what the README says
 *   (throttle local or closed, connection counts local, ratelimit accept or
 *   defer, greylisting 451 4.3.0), with one log line per feature and node;
 *   restarted on the same port, sharing comes back by itself.
 */
import net from 'node:net';
import path from 'node:path';
import { writeFile } from 'node:fs/promises';
import t, { type Test } from 'tap';
import { startTestServer, type TestServer } from '../core/testing/index.js';
import { hashPassword } from '../plugins/vpopmail/passwords.js';
import { SqliteStore } from '../plugins/vpopmail/sqlite-store.js';
import { needs, run, serve, tempDir } from './helpers.js';
import { startRedis, type RedisPeer } from './peers/redis.js';

const PASSWORD = 'correct horse';
const LOCKOUT_AFTER = 6;
const PER_IP = 3;

type Proto = 'smtp' | 'pop3';

interface Attempt {
  readonly proto: Proto;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  readonly source: string;
}

/** Login attempts, one connection each, in order: smtplib AUTH PLAIN or poplib USER/PASS from `source`. */
const LOGIN_CLIENT = String.raw`
import json, poplib, smtplib, socket, sys
class POP3From(poplib.POP3):
    def __init__(self, host, port, source):
        self.source = source
        super().__init__(host, port, timeout=30)
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))
def text(b):
    return b.decode('utf-8', 'replace') if isinstance(b, bytes) else str(b)
from concurrent.futures import ThreadPoolExecutor
cfg = json.load(sys.stdin)
def one(a):
    try:
        if a['proto'] == 'smtp':
            s = smtplib.SMTP('127.0.0.1', a['port'], timeout=30, source_address=(a['source'], 0))
            s.ehlo('client.test')
            s.user, s.password = a['user'], a['password']
            try:
                code, resp = s.auth('PLAIN', s.auth_plain)
            except smtplib.SMTPAuthenticationError as e:
                code, resp = e.smtp_code, e.smtp_error
            s.close()
            return '%d %s' % (code, text(resp))
        p = POP3From('127.0.0.1', a['port'], a['source'])
        p.user(a['user'])
        try:
            reply = text(p.pass_(a['password']))
            p.quit()
        except poplib.error_proto as e:
            reply = text(e.args[0])
        p.close()
        return reply
    except Exception as e:
        return 'error ' + repr(e)
with ThreadPoolExecutor(cfg['threads']) as pool:
    print(json.dumps(list(pool.map(one, cfg['attempts']))))
`;

/** Replies in the attempts' order; `threads` > 1 runs that many at once. */
async function logins(attempts: readonly Attempt[], threads = 1): Promise<string[]> {
  const r = await run('python3', ['-c', LOGIN_CLIENT], { input: JSON.stringify({ attempts, threads }), timeout: 120_000 });
  if (r.code !== 0) throw new Error(`python3 exited with ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as string[];
}

const LOCKED: Record<Proto, RegExp> = { smtp: /^454 4\.7\.0 Too many failed logins/, pop3: /^-ERR \[SYS\/TEMP\] Too many failed logins/ };
const UNAVAILABLE: Record<Proto, RegExp> = { smtp: /^454 4\.7\.0 Temporary authentication failure/, pop3: /^-ERR \[SYS\/TEMP\] Temporary authentication failure/ };
const OK: Record<Proto, RegExp> = { smtp: /^235 /, pop3: /^\+OK / };
const FAILED: Record<Proto, RegExp> = { smtp: /^535 /, pop3: /^-ERR \[AUTH\] / };

interface Node {
  readonly server: TestServer;
  readonly name: string;
  port(proto: Proto | 'mx'): number;
}

interface NodeOptions {
  readonly throttleOnFailure?: 'local' | 'closed';
  readonly ratelimit?: Record<string, unknown>;
  /** A third listener `mx` with spamdyke's greylisting over the same store. */
  readonly greylist?: boolean;
}

/**
 * One node: an SMTP listener (ratelimit, vpopmail) and a POP3 listener
 * (vpopmail), alice@dom.test in its own vpopmail store, everything shared
 * through `redis` under one prefix.
 */
async function startNode(t: Test, name: string, redis: RedisPeer, o: NodeOptions = {}): Promise<Node> {
  const limits = { maxConnectionsPerIp: PER_IP, maxConnections: 50 };
  const server = await startTestServer({
    listeners: [
      { name: 'smtp', allowInsecureAuth: true, limits, plugins: ['ratelimit', 'vpopmail'] },
      { name: 'pop3', protocol: 'pop3', allowInsecureAuth: true, limits, plugins: ['vpopmail'] },
      ...(o.greylist ? [{ name: 'mx', plugins: [{ spamdyke: { graylist: { enabled: true } } }] }] : []),
    ],
    pluginOptions: { vpopmail: {}, ratelimit: o.ratelimit ?? { sender: { limit: 10, window: '1m' } } },
    config: {
      localDomains: ['localhost', 'example.test'],
      store: { backend: 'redis', url: redis.url, prefix: `site${redis.port}:` },
      loginThrottle: { shared: true, freeFailures: 2, delay: '20ms', maxDelay: '50ms', lockoutAfter: LOCKOUT_AFTER, onStoreFailure: o.throttleOnFailure ?? 'local' },
      connectionCounts: { shared: true, nodeTimeout: '3s' },
    },
  });
  const store = new SqliteStore(path.join(server.dataDir, 'vpopmail.sqlite'));
  t.teardown(async () => {
    store.close();
    await server.close();
  });
  store.addDomain({ name: 'dom.test' });
  store.addUser({ domain: 'dom.test', name: 'alice', passwordHash: await hashPassword(PASSWORD) });
  store.addUser({ domain: 'dom.test', name: 'bob', passwordHash: await hashPassword(PASSWORD) });
  return { server, name, port: (proto) => server.ports[proto]! };
}

/** Opens a connection from `source` and returns it with its greeting line. */
async function greeting(port: number, source: string, open: net.Socket[]): Promise<string> {
  const socket = net.connect({ host: '127.0.0.1', port, localAddress: source });
  open.push(socket);
  return new Promise<string>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no greeting from port ${port}`)), 10_000);
    socket.on('data', (d: Buffer) => {
      buf += d.toString();
      const i = buf.indexOf('\r\n');
      if (i >= 0) {
        clearTimeout(timer);
        resolve(buf.slice(0, i));
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function closeAll(sockets: net.Socket[]): Promise<void> {
  return Promise.all(sockets.splice(0).map((s) => new Promise<void>((resolve) => (s.destroyed ? resolve() : (s.once('close', () => resolve()), s.destroy()))))).then(() => undefined);
}

/** Until `f` is true, or fails after `ms`. */
async function until(f: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** One message over SMTP; the MAIL reply, and the final one when MAIL was accepted. */
async function send(node: Node, from: string, to: readonly string[], source = '127.0.0.1'): Promise<{ mail: number; text: string; final?: number }> {
  const c = await node.server.connect({ localAddress: source });
  try {
    await c.ehlo('client.test');
    const r = await c.mail({ from, to: [...to], data: 'Subject: hi\r\n\r\nhello\r\n' });
    return { mail: r.mail.code, text: `${r.mail.code} ${r.mail.enhanced} ${r.mail.text}`, ...(r.data ? { final: r.data.code } : {}) };
  } finally {
    await c.quit().catch(() => undefined);
  }
}

t.test('login throttle: guesses spread over two nodes are locked out after lockoutAfter in total', needs('redis-server', 'python3'), async (t) => {
  const redis = await startRedis(t);
  const a = await startNode(t, 'a', redis);
  const b = await startNode(t, 'b', redis);
  const at = (n: Node, proto: Proto, source: string, password: string, user = 'alice@dom.test'): Attempt => ({ proto, port: n.port(proto), user, password, source });

  // alice logs in at node a from 127.0.3.1: her network is known at both nodes from now on.
  const [home] = await logins([at(a, 'smtp', '127.0.3.1', PASSWORD)]);
  t.match(home, OK.smtp, `alice logs in at node a: ${home}`);

  // The attacker spreads wrong guesses over both nodes and both protocols, from one address.
  const order: Array<[Node, Proto]> = [
    [a, 'smtp'],
    [b, 'pop3'],
    [b, 'smtp'],
    [a, 'pop3'],
    [b, 'smtp'],
    [a, 'smtp'],
    [b, 'pop3'],
    [a, 'smtp'],
    [b, 'smtp'],
  ];
  const guesses = order.map(([n, proto], i) => at(n, proto, '127.0.4.1', `wrong-${i}`));
  const replies = await logins([...guesses, at(b, 'smtp', '127.0.4.1', PASSWORD), at(a, 'pop3', '127.0.4.1', PASSWORD)]);
  replies.slice(0, LOCKOUT_AFTER).forEach((r, i) => t.match(r, FAILED[order[i]![1]], `guess ${i + 1} at node ${order[i]![0].name} over ${order[i]![1]} is checked and fails: ${r}`));
  replies.slice(LOCKOUT_AFTER, order.length).forEach((r, i) => {
    const [n, proto] = order[LOCKOUT_AFTER + i]!;
    t.match(r, LOCKED[proto], `guess ${LOCKOUT_AFTER + i + 1} at node ${n.name} over ${proto} is locked out: ${r}`);
  });
  t.match(replies[order.length], LOCKED.smtp, 'the right password from the attacker address is refused unchecked at b');
  t.match(replies[order.length + 1], LOCKED.pop3, 'and at a over pop3');

  // Password checks, from both nodes' logs: lockoutAfter in total, not per node.
  const checks = [a, b].flatMap((n) => n.server.logs.filter((l) => l.ip === '127.0.4.1' && ((l.hook === 'auth' && l.event !== 'login' && (l.action === 'reject' || l.action === 'accept')) || (l.event === 'login' && (l.result === 'failed' || l.result === 'ok')))));
  t.equal(checks.length, LOCKOUT_AFTER, `${checks.length} passwords checked over both nodes for ${order.length + 2} attempts`);

  // alice at node b from her network (known from node a's login): only the pair counts there.
  const after = await logins([at(b, 'smtp', '127.0.3.1', PASSWORD), at(b, 'pop3', '127.0.3.2', PASSWORD), at(a, 'smtp', '127.0.5.1', PASSWORD)]);
  t.match(after[0], OK.smtp, `alice logs in at node b from 127.0.3.1: ${after[0]}`);
  t.match(after[1], OK.pop3, `and over pop3 from 127.0.3.2, the same /24: ${after[1]}`);
  t.match(after[2], LOCKED.smtp, `from a network she never used (127.0.5.1) her account is locked, as on one node: ${after[2]}`);

  // 40 guesses for bob at once, half at each node, from 40 addresses (one connection each, under the per-IP limit):
  // the account's count stops them, and its reservation is atomic in Redis.
  const parallel = Array.from({ length: 40 }, (_, i) => at(i % 2 ? a : b, i % 4 < 2 ? 'smtp' : 'pop3', `127.0.10.${i + 1}`, `parallel-${i}`, 'bob@dom.test'));
  const rush = await logins(parallel, 40);
  t.same(rush.filter((r) => r.startsWith('error')), [], 'every parallel guess got an answer');
  const checked = rush.filter((r, i) => FAILED[parallel[i]!.proto].test(r)).length;
  const locked = rush.filter((r, i) => LOCKED[parallel[i]!.proto].test(r)).length;
  t.ok(checked >= 1 && checked <= LOCKOUT_AFTER, `${checked} of 40 parallel guesses over both nodes were checked (at most ${LOCKOUT_AFTER})`);
  t.equal(checked + locked, 40, 'the rest were refused unchecked');

  const lockouts = [a, b].reduce((sum, n) => sum + (n.server.server.services.loginThrottle.stats.lockouts.ip + n.server.server.services.loginThrottle.stats.lockouts.account), 0);
  t.ok(lockouts >= 2, `lockouts begun, each counted by the node whose failure reached it: ${lockouts}`);
});

t.test('maxConnectionsPerIp holds across two nodes; a node (two workers) killed with -9 leaves no count behind', needs('redis-server'), async (t) => {
  const redis = await startRedis(t);
  const a = await startNode(t, 'a', redis);
  const b = await startNode(t, 'b', redis);
  const open: net.Socket[] = [];
  t.teardown(() => closeAll(open));

  const src = '127.0.6.1';
  const first = [await greeting(a.port('smtp'), src, open), await greeting(b.port('smtp'), src, open), await greeting(a.port('smtp'), src, open)];
  first.forEach((g, i) => t.match(g, /^220 /, `connection ${i + 1} from ${src} greeted: ${g}`));
  t.match(await greeting(b.port('smtp'), src, open), /^421 4\.7\.0 Too many connections from your IP address \(3\)/, `the ${PER_IP + 1}th, at node b, is refused`);
  t.match(await greeting(a.port('smtp'), src, open), /^421 4\.7\.0 /, 'and at node a');
  t.match(await greeting(b.port('smtp'), '127.0.6.2', open), /^220 /, 'another address is greeted');
  t.match(await greeting(b.port('pop3'), src, open), /^\+OK /, 'the pop3 listener counts its own connections');

  // One closes at node a: a slot is free at node b.
  open[0]!.destroy();
  await until(async () => {
    const probe: net.Socket[] = [];
    const g = await greeting(b.port('smtp'), src, probe);
    if (/^220 /.test(g)) {
      open.push(...probe);
      return true;
    }
    await closeAll(probe);
    return false;
  }, 5_000, 'the released slot');
  t.pass('a connection closed at node a frees a slot at node b');
  await closeAll(open);

  // A third node, a real `yubin serve` with two workers (its primary counts for them, in Redis),
  // takes the connections of 127.0.6.9 and is killed with -9 (its workers go with it).
  const dir = await tempDir(t);
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(
    config,
    [
      'hostname: c.test',
      'workers: 2',
      'dataDir: ./var',
      'localDomains: [example.test]',
      `store: { backend: redis, url: "${redis.url}", prefix: "site${redis.port}:" }`,
      'connectionCounts: { shared: true, nodeTimeout: 3s }',
      'listeners:',
      '  - name: smtp',
      '    protocol: smtp',
      '    listen: 127.0.0.1:0',
      `    limits: { maxConnectionsPerIp: ${PER_IP} }`,
      '',
    ].join('\n'),
  );
  const c = await serve(t, config, 1);
  const victim = '127.0.6.9';
  for (let i = 0; i < PER_IP; i++) t.match(await greeting(c.ports.smtp!, victim, open), /^220 /, `node c greets connection ${i + 1} from ${victim}`);
  t.match(await greeting(c.ports.smtp!, victim, open), /^421 /, 'a 4th at node c is refused (its workers ask the primary, which asks Redis)');
  t.match(await greeting(a.port('smtp'), victim, open), /^421 /, 'node a sees node c\'s connections');
  c.child.kill('SIGKILL');
  await c.exited;
  await closeAll(open);
  t.match(await greeting(a.port('smtp'), victim, open), /^421 /, 'right after the kill its counts still stand (nobody gave them back)');
  await closeAll(open);
  const killed = Date.now();
  await until(async () => {
    const probe: net.Socket[] = [];
    const g = await greeting(a.port('smtp'), victim, probe);
    await closeAll(probe);
    return /^220 /.test(g);
  }, 10_000, 'the dead node to be left out');
  const gone = Date.now() - killed;
  t.ok(gone <= 5_000, `after nodeTimeout (3 s) the dead node's connections no longer count (${gone} ms)`);
});

t.test('ratelimit: 10 messages a minute per sender, across two nodes', needs('redis-server'), async (t) => {
  const redis = await startRedis(t);
  const a = await startNode(t, 'a', redis);
  const b = await startNode(t, 'b', redis);
  const nodes = [a, b];
  for (let i = 0; i < 10; i++) {
    // The first message has three recipients: it counts once.
    const to = i === 0 ? ['postmaster@example.test', 'one@example.test', 'two@example.test'] : ['postmaster@example.test'];
    const r = await send(nodes[i % 2]!, 'news@sender.example', to);
    t.equal(r.final, 250, `message ${i + 1} at node ${nodes[i % 2]!.name} accepted`);
  }
  for (const n of nodes) {
    const r = await send(n, 'News@Sender.Example', ['postmaster@example.test']);
    t.equal(r.mail, 451, `the 11th at node ${n.name} is deferred at MAIL: ${r.text}`);
    t.match(r.text, /^451 4\.7\.1 Rate limit exceeded for sender news@sender\.example/);
  }
  t.equal((await send(b, 'other@sender.example', ['postmaster@example.test'])).final, 250, 'another sender is accepted');
  t.equal((await a.server.queued()).length + (await b.server.queued()).length, 11, '10 messages of the limited sender queued over both nodes, and the other one');
  const lines = nodes.flatMap((n) => n.server.logs.filter((l) => l.plugin === 'ratelimit' && l.action === 'defer'));
  t.equal(lines.length, 2, 'one log line per refusal, naming the plugin');
  t.match(String(lines[0]!.reason), /Rate limit exceeded for sender news@sender\.example \(10 messages, limit 10 per 60 s\)/);
});

t.test('redis-server killed: each feature does what it is documented to; restarted, sharing comes back', needs('redis-server', 'python3'), async (t) => {
  const redis = await startRedis(t);
  // Node a: the defaults (throttle local, ratelimit accept) and a greylisting listener; node b: closed and defer.
  const a = await startNode(t, 'a', redis, { ratelimit: { sender: { limit: 3, window: '1m' } }, greylist: true });
  const b = await startNode(t, 'b', redis, { throttleOnFailure: 'closed', ratelimit: { sender: { limit: 3, window: '1m' }, onStoreFailure: 'defer' } });
  const open: net.Socket[] = [];
  t.teardown(() => closeAll(open));

  // Sharing works before the kill.
  t.match(await greeting(a.port('smtp'), '127.0.7.1', open), /^220 /);
  await closeAll(open);

  process.kill(redis.child.pid!, 'SIGKILL');
  await redis.stop();

  // Login throttle: a counts on its own (its failures are still throttled), b refuses every login.
  const guess = (n: Node, proto: Proto, password: string): Attempt => ({ proto, port: n.port(proto), user: 'alice@dom.test', password, source: '127.0.8.1' });
  const down = await logins([
    ...Array.from({ length: LOCKOUT_AFTER }, (_, i) => guess(a, 'smtp', `wrong-${i}`)),
    guess(a, 'smtp', 'wrong-again'),
    guess(b, 'smtp', PASSWORD),
    guess(b, 'pop3', PASSWORD),
  ]);
  down.slice(0, LOCKOUT_AFTER).forEach((r, i) => t.match(r, FAILED.smtp, `node a, onStoreFailure local: guess ${i + 1} checked: ${r}`));
  t.match(down[LOCKOUT_AFTER], LOCKED.smtp, `node a still locks the guesser out with its own counts: ${down[LOCKOUT_AFTER]}`);
  t.match(down[LOCKOUT_AFTER + 1], UNAVAILABLE.smtp, `node b, onStoreFailure closed: the right password gets a temporary failure: ${down[LOCKOUT_AFTER + 1]}`);
  t.match(down[LOCKOUT_AFTER + 2], UNAVAILABLE.pop3, `and over pop3: ${down[LOCKOUT_AFTER + 2]}`);

  // Connection counts: each node counts its own.
  const src = '127.0.7.2';
  for (const n of [a, b]) for (let i = 0; i < 2; i++) t.match(await greeting(n.port('smtp'), src, open), /^220 /, `node ${n.name} greets ${src} (${i + 1}): local counts`);
  t.match(await greeting(a.port('smtp'), src, open), /^220 /, `a third at node a (${PER_IP} there)`);
  t.match(await greeting(a.port('smtp'), src, open), /^421 /, 'a fourth at node a: its own limit still holds');
  await closeAll(open);

  // ratelimit: a accepts uncounted, b defers.
  for (let i = 0; i < 4; i++) t.equal((await send(a, 'bulk@sender.example', ['postmaster@example.test'])).final, 250, `node a accepts message ${i + 1} uncounted (limit 3)`);
  const deferred = await send(b, 'bulk@sender.example', ['postmaster@example.test']);
  t.match(deferred.text, /^451 4\.3\.0 Temporary rate limit failure/, `node b defers: ${deferred.text}`);

  // Greylisting: the plugin's store call fails, which the core answers as a plugin fault, 451 4.3.0.
  const mx = await a.server.connect({ listener: 'mx' });
  await mx.ehlo('client.test');
  const grey = await mx.mail({ from: 'x@sender.example', to: 'postmaster@example.test', data: 'Subject: hi\r\n\r\nhi\r\n' });
  await mx.quit();
  t.equal(grey.rcpt[0]!.code, 451, 'greylisting with the store down: 451 at RCPT');
  t.equal(grey.rcpt[0]!.enhanced, '4.3.0');

  // One line per feature and node when the fallback starts, however many calls fell back.
  const downLines = (n: Node) => n.server.logs.filter((l) => l.event === 'shared-store' && l.state === 'down').map((l) => l.feature);
  t.same(downLines(a).sort(), ['connection counts', 'login throttle', 'ratelimit'], `node a logged one line per feature: ${downLines(a).join(', ')}`);
  t.same(downLines(b).sort(), ['connection counts', 'login throttle', 'ratelimit'], 'and node b');

  // Redis back on the same port, empty: every feature is shared again without a restart.
  const again = await startRedis(t, redis.port);
  t.ok(again.child.pid !== redis.child.pid, 'a new redis-server process');
  await until(async () => /^\+OK /.test((await logins([{ proto: 'pop3', port: b.port('pop3'), user: 'alice@dom.test', password: PASSWORD, source: '127.0.3.1' }]))[0]!), 10_000, 'node b to take logins again');
  // The heartbeat (every nodeTimeout / 3) puts the nodes back in the sums.
  await new Promise((r) => setTimeout(r, 1_500));
  const src2 = '127.0.7.3';
  const shared = [await greeting(a.port('smtp'), src2, open), await greeting(b.port('smtp'), src2, open), await greeting(a.port('smtp'), src2, open), await greeting(b.port('smtp'), src2, open)];
  t.same(
    shared.map((g) => g.slice(0, 3)),
    ['220', '220', '220', '421'],
    'connection counts are shared again',
  );
  await closeAll(open);

  const spread = Array.from({ length: LOCKOUT_AFTER + 1 }, (_, i) => ({ ...guess(i % 2 ? a : b, 'smtp', `again-${i}`), source: '127.0.9.1' }));
  const replies = await logins(spread);
  t.equal(replies.filter((r) => FAILED.smtp.test(r)).length, LOCKOUT_AFTER, 'the throttle is shared again: lockoutAfter checks over both nodes');
  t.match(replies[LOCKOUT_AFTER], LOCKED.smtp, `then locked out: ${replies[LOCKOUT_AFTER]}`);

  for (let i = 0; i < 3; i++) t.equal((await send(i % 2 ? a : b, 'again@sender.example', ['postmaster@example.test'])).final, 250, `ratelimit counts again: message ${i + 1}`);
  t.equal((await send(a, 'again@sender.example', ['postmaster@example.test'])).mail, 451, 'the 4th (limit 3) is deferred at node a');

  const upLines = (n: Node) => n.server.logs.filter((l) => l.event === 'shared-store' && l.state === 'up').map((l) => l.feature);
  t.same(upLines(a).sort(), ['connection counts', 'login throttle', 'ratelimit'], `node a logged the recovery once per feature: ${upLines(a).join(', ')}`);
  t.same(upLines(b).sort(), ['connection counts', 'login throttle', 'ratelimit'], 'and node b');
});
