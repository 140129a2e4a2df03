/**
 * `workers: 2` (issue 15, "all cores"): a primary that owns the queue, the
 * control socket and the http listener, and two workers that run the smtp
 * listener — driven as an operator runs it, `yubin serve` with real sockets.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { Spool } from '../core/queue/spool.js';
import { Pop3TestClient, SmtpTestClient } from '../core/testing/index.js';
import { serve, sleep, tempDir, waitFor, yubin, type ServeProcess } from './helpers.js';

/** An auth plugin that knows one user, alice with the password "right". */
const AUTH_PLUGIN = `export default {
  name: 'one-user',
  setup() {
    return {
      authMechanisms: () => ['PLAIN', 'LOGIN'],
      hooks: {
        auth({ username, password, mailbox }) {
          if (username === 'alice' && password === 'right') {
            mailbox(new URL('./alice/Maildir', import.meta.url).pathname);
            return { action: 'accept', code: 235, enhanced: '2.7.0', text: 'welcome' };
          }
          return { action: 'reject', code: 535, enhanced: '5.7.8', text: 'no' };
        },
      },
    };
  },
};
`;

interface Options {
  readonly greeting?: string;
  readonly limits?: string;
  readonly queue?: string;
  readonly more?: string;
}

function configText(o: Options = {}): string {
  return [
    'dataDir: ./var',
    'workers: 2',
    'localDomains: [localhost]',
    'shutdownTimeout: 5s',
    'plugins:',
    '  rcpthosts: { domains: [localhost] }',
    'delivery:',
    '  plugins: [maildir]',
    'loginThrottle: { freeFailures: 10, lockoutAfter: 3 }',
    ...(o.queue ? [o.queue] : []),
    ...(o.more ? [o.more] : []),
    'listeners:',
    '  - name: smtp',
    '    protocol: smtp',
    '    listen: 127.0.0.1:0',
    '    allowInsecureAuth: true',
    `    greeting: ${o.greeting ?? 'ESMTP'}`,
    '    plugins: [rcpthosts, ./one-user.mjs]',
    ...(o.limits ? [`    limits: ${o.limits}`] : []),
    '  - name: pop3',
    '    protocol: pop3',
    '    listen: 127.0.0.1:0',
    '    allowInsecureAuth: true',
    '    plugins: [./one-user.mjs]',
    '  - name: http',
    '    protocol: http',
    '    listen: 127.0.0.1:0',
    '    serve: [metrics]',
    '',
  ].join('\n');
}

async function site(t: Test, o: Options = {}): Promise<{ dir: string; config: string }> {
  const dir = await tempDir(t, 'yubin-workers-t-');
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(path.join(dir, 'one-user.mjs'), AUTH_PLUGIN);
  for (const sub of ['cur', 'new', 'tmp']) await mkdir(path.join(dir, 'alice/Maildir', sub), { recursive: true });
  await writeFile(config, configText(o));
  return { dir, config };
}

/** The PIDs of the workers as the primary announced them. */
function workerPids(server: ServeProcess): number[] {
  return server.logs.filter((l) => l.event === 'worker-ready').map((l) => l.workerPid as number);
}

/** The worker (1 or 2) each connection's `connect` line came from, in order. */
function connectWorkers(server: ServeProcess): number[] {
  return server.logs.filter((l) => l.event === 'connect' && l.listener === 'smtp').map((l) => l.worker as number);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString('base64');

t.test('mail taken by both workers is delivered by the one scheduler; status and metrics sum the workers; SIGTERM leaves no process', async (t) => {
  const { dir, config } = await site(t);
  const server = await serve(t, config, 3);
  const pids = workerPids(server);
  t.equal(pids.length, 2, 'two workers');
  t.ok(server.logs.some((l) => l.event === 'ready' && l.workers === 2 && l.worker === undefined), 'the primary is ready with 2 workers');
  t.ok(server.logs.some((l) => l.event === 'listen' && l.listener === 'smtp' && l.worker === 1) && server.logs.some((l) => l.event === 'listen' && l.listener === 'smtp' && l.worker === 2), "each worker's lines carry worker: N");
  const port = server.ports.smtp!;
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) {
    const c = await SmtpTestClient.connect(port);
    await c.ehlo();
    const r = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: `Subject: m${i}\n\nbody ${i}\n` });
    ids.push(/queued as (\w+)/.exec(r.data!.text)![1]!);
    await c.quit();
  }
  await waitFor(() => (connectWorkers(server).length >= 6 ? true : undefined));
  t.same(new Set(connectWorkers(server)), new Set([1, 2]), 'connections went to both workers');
  const box = path.join(dir, 'var/mail/localhost/postmaster/Maildir/new');
  const delivered = () => server.logs.filter((l) => l.event === 'delivery' && ids.includes(l.id as string));
  // A delivery's log line reaches us after its file does (and CI met the gap): wait for both, then for any extra.
  await waitFor(async () => ((await readdir(box).catch(() => [])).length >= 6 && delivered().length >= 6 ? true : undefined));
  await sleep(300);
  t.equal((await readdir(box)).length, 6, 'six files in the Maildir');
  const deliveries = delivered();
  t.equal(deliveries.length, 6, 'each message delivered once');
  t.ok(
    deliveries.every((l) => l.worker === undefined && l.pid === server.child.pid),
    'by the primary',
  );

  // Two connections held open: the status sums them over the workers.
  const held = [await SmtpTestClient.connect(port), await SmtpTestClient.connect(port)];
  const st = await yubin(['status', '--json', '--config', config]);
  t.equal(st.code, 0, st.stderr);
  const status = JSON.parse(st.stdout) as { running: { workers: number; listeners: Array<{ name: string; connections?: number; address: string }> } };
  t.equal(status.running.workers, 2, 'status names the workers');
  const smtp = status.running.listeners.find((l) => l.name === 'smtp');
  t.equal(smtp?.connections, 2, 'and the connections of both');
  t.equal(smtp?.address, `127.0.0.1:${port}`);
  const text = await yubin(['status', '--config', config]);
  t.match(text.stdout, /server: running, pid \d+, up .*, 2 workers/);
  for (const c of held) await c.quit();

  const metrics = await (await fetch(`http://127.0.0.1:${server.ports.http}/metrics`)).text();
  t.match(metrics, /^yubin_messages_total\{listener="smtp",result="accepted"\} 6$/m, 'messages summed over the workers');
  t.match(metrics, /^yubin_connections_total\{listener="smtp",outcome="accepted"\} 8$/m, 'connections summed over the workers');
  t.match(metrics, /^yubin_deliveries_total\{channel="local",result="success"\} 6$/m, "and the primary's deliveries");

  t.equal(await server.stop(), 0, 'SIGTERM: exit 0');
  t.same(pids.filter(alive), [], 'no worker left');
});

t.test('maxConnectionsPerIp and maxConnections hold across workers; a slot is given back on close', async (t) => {
  const { config } = await site(t, { limits: '{ maxConnectionsPerIp: 2, maxConnections: 3 }' });
  const server = await serve(t, config, 3);
  const port = server.ports.smtp!;
  const a = await SmtpTestClient.connect(port);
  const b = await SmtpTestClient.connect(port);
  t.equal(a.greeting?.code, 220);
  t.equal(b.greeting?.code, 220);
  const c = await SmtpTestClient.connect(port);
  t.equal(c.greeting?.code, 421, 'the third connection from one IP is refused');
  t.match(c.greeting?.text, /Too many connections from your IP address \(2\)/);
  await waitFor(() => (connectWorkers(server).length >= 3 ? true : undefined));
  t.same(new Set(connectWorkers(server)), new Set([1, 2]), 'though the three went to both workers');
  await a.quit();
  await sleep(200);
  const d = await SmtpTestClient.connect(port);
  t.equal(d.greeting?.code, 220, 'a closed connection gives its slot back');

  // maxConnections 3: from another loopback address, the listener is full with b, d and this one.
  const e = await SmtpTestClient.connect(port, { localAddress: '127.0.0.2' });
  t.equal(e.greeting?.code, 220);
  const f = await SmtpTestClient.connect(port, { localAddress: '127.0.0.2' });
  t.equal(f.greeting?.code, 421, 'maxConnections counts both workers');
  t.match(f.greeting?.text, /Too many connections, try again later/);
  for (const x of [b, d, e]) await x.quit();
  t.equal(await server.stop(), 0);
});

t.test('the login throttle counts failures from every worker', async (t) => {
  const { config } = await site(t);
  const server = await serve(t, config, 3);
  const port = server.ports.smtp!;
  const codes: number[] = [];
  for (let i = 0; i < 4; i++) {
    const c = await SmtpTestClient.connect(port);
    await c.ehlo();
    codes.push((await c.command(`AUTH PLAIN ${plain('alice', `wrong${i}`)}`)).code);
    await c.quit();
  }
  t.same(codes, [535, 535, 535, 454], 'three failures over two workers lock the fourth attempt out');
  await waitFor(() => (connectWorkers(server).length >= 4 ? true : undefined));
  t.same(new Set(connectWorkers(server)), new Set([1, 2]), 'the attempts went to both workers');
  const c = await SmtpTestClient.connect(port);
  await c.ehlo();
  t.equal((await c.command(`AUTH PLAIN ${plain('alice', 'right')}`)).code, 454, 'even the right password, on either worker');
  await c.quit();
  t.equal(await server.stop(), 0);
});

t.test('POP3: one maildrop is locked across workers', async (t) => {
  const { config } = await site(t);
  const server = await serve(t, config, 3);
  const port = server.ports.pop3!;
  const login = async () => {
    const c = await Pop3TestClient.connect(port);
    await c.command('USER alice');
    return { c, reply: await c.command('PASS right') };
  };
  const first = await login();
  t.match(first.reply, /^\+OK maildrop has 0 messages/);
  const second = await login();
  t.match(second.reply, /^-ERR \[IN-USE\]/, 'a second session is refused, on whichever worker');
  const pop3Workers = server.logs.filter((l) => l.event === 'connect' && l.listener === 'pop3').map((l) => l.worker);
  t.comment(`pop3 sessions on workers ${pop3Workers.join(', ')}`);
  await first.c.command('QUIT');
  await sleep(200);
  const third = await login();
  t.match(third.reply, /^\+OK/, 'free again once the first session quit');
  await third.c.command('QUIT');
  await second.c.command('QUIT').catch(() => '');
  t.equal(await server.stop(), 0);
});

t.test('SIGHUP reloads the primary and every worker', async (t) => {
  const { config } = await site(t, { greeting: 'before' });
  const server = await serve(t, config, 3);
  const port = server.ports.smtp!;
  await writeFile(config, configText({ greeting: 'after' }));
  server.child.kill('SIGHUP');
  for (const w of [undefined, 1, 2]) await server.waitLog((l) => l.event === 'reload' && l.level === 30 && l.worker === w);
  const seen = new Set<string>();
  for (let i = 0; i < 4; i++) {
    const c = await SmtpTestClient.connect(port);
    seen.add(c.greeting!.text);
    await c.quit();
  }
  t.same([...seen].map((g) => g.replace(/^\S+ /, '')), ['after'], 'every new connection, on both workers, gets the new greeting');
  t.equal(await server.stop(), 0);
});

t.test('kill -9 of a worker after its 250: the message is delivered, the worker is restarted; kill -9 of the primary: the workers go', async (t) => {
  const { dir, config } = await site(t);
  const server = await serve(t, config, 3);
  const port = server.ports.smtp!;
  const c = await SmtpTestClient.connect(port);
  await c.ehlo();
  await waitFor(() => (connectWorkers(server).length >= 1 ? true : undefined));
  const worker = connectWorkers(server)[0]!;
  const pid = server.logs.find((l) => l.event === 'worker-ready' && l.worker === worker)!.workerPid as number;
  const r = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: then killed\n\nbody\n' });
  t.equal(r.data?.code, 250);
  process.kill(pid, 'SIGKILL');
  const box = path.join(dir, 'var/mail/localhost/postmaster/Maildir/new');
  await waitFor(async () => ((await readdir(box).catch(() => [])).length >= 1 ? true : undefined));
  t.pass('delivered');
  const exit = await server.waitLog((l) => l.event === 'worker-exit' && l.worker === worker);
  t.equal(exit.signal, 'SIGKILL', 'the death is logged');
  await server.waitLog((l) => l.event === 'worker-ready' && l.worker === worker && l.workerPid !== pid);
  const again = await SmtpTestClient.connect(port);
  t.equal(again.greeting?.code, 220, 'and a new worker takes its place');
  await again.quit();

  // The primary killed: its workers notice the IPC channel close and exit.
  const pids = workerPids(server).filter(alive);
  t.equal(pids.length, 2);
  await server.stop('SIGKILL');
  await waitFor(() => (pids.some(alive) ? undefined : true), 10_000);
  t.pass('no worker outlives the primary');
});

t.test('a message answered 250 survives kill -9 of the primary and is delivered after the restart', async (t) => {
  const { dir, config } = await site(t, { queue: 'queue: { concurrencyLocal: 0 }' });
  const server = await serve(t, config, 3);
  const c = await SmtpTestClient.connect(server.ports.smtp!);
  await c.ehlo();
  const r = await c.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: durable\n\nbody\n' });
  t.equal(r.data?.code, 250);
  await server.stop('SIGKILL');
  t.equal((await new Spool(path.join(dir, 'var/queue')).list()).length, 1, 'on disk');
  await writeFile(config, configText());
  const again = await serve(t, config, 3);
  const box = path.join(dir, 'var/mail/localhost/postmaster/Maildir/new');
  await waitFor(async () => ((await readdir(box).catch(() => [])).length >= 1 ? true : undefined));
  t.pass('delivered by the new primary');
  t.equal(await again.stop(), 0);
});

t.test('smuggling against workers: LF.LF gets 451, nothing queued', async (t) => {
  const { dir, config } = await site(t, { queue: 'queue: { concurrencyLocal: 0 }' });
  const server = await serve(t, config, 3);
  const c = await SmtpTestClient.connect(server.ports.smtp!);
  await c.ehlo();
  t.equal((await c.command('MAIL FROM:<user@sender.example>')).code, 250);
  t.equal((await c.command('RCPT TO:<postmaster@localhost>')).code, 250);
  t.equal((await c.command('DATA')).code, 354);
  c.write('Subject: first\r\n\r\nfirst message\n.\nMAIL FROM:<admin@bank.example>\r\nRCPT TO:<postmaster@localhost>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond\r\n.\r\nQUIT\r\n');
  const reply = await c.read();
  t.equal(reply.code, 451);
  t.ok(await c.waitClosed(3000), 'the server hung up');
  t.same(await new Spool(path.join(dir, 'var/queue')).list(), [], 'nothing queued');
  t.equal(await server.stop(), 0);
});

t.test('workers must be a whole number of at least 1, or auto', async (t) => {
  for (const bad of ['0', '-1', '"many"', '1.5']) {
    const { config } = await site(t);
    await writeFile(config, configText().replace('workers: 2', `workers: ${bad}`));
    for (const cmd of ['check-config', 'serve']) {
      const r = await yubin([cmd, '--config', config]);
      t.equal(r.code, 2, `${cmd} with workers: ${bad} exits 2`);
      const lines = r.stderr.trim().split('\n');
      t.equal(lines.length, 1, 'one line');
      t.match(lines[0], /workers.*must be a whole number of at least 1, or auto/);
    }
  }
  const { config } = await site(t);
  await writeFile(config, configText().replace('workers: 2', 'workers: auto'));
  const ok = await yubin(['check-config', '--config', config]);
  t.equal(ok.code, 0, 'auto is taken');
});
