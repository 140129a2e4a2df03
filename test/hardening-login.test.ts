/**
 * Hardening (issue 18, defects 2-5): the login throttle and what a login
 * reveals, attacked as the attacker did, over real sockets with
 * Python's smtplib and poplib against the real vpopmail plugin (scrypt
 * hashes), from several loopback addresses.
 *
 * 2. Parallel guesses: 100 connections from one IP, guessing at once, get
 *    at most `lockoutAfter` password checks, over SMTP AUTH and POP3 alike
 *    (before: 100 and more, since the failure was counted only after the
 *    check).
 * 3. Other spellings of a locked-out account (`alice%dom.test`,
 *    `alice@dom.test.`, `alice%DOM.TEST.`) are refused like the account.
 * 4. Ten wrong guesses from elsewhere do not lock a user out of a network
 *    she logged in from; an unknown network is refused (the trade-off).
 * 5. A login to a domain we do not host, or for a user we do not have,
 *    takes as long as a wrong password.
 */
import path from 'node:path';
import t, { type Test } from 'tap';
import { startTestServer, type TestServer } from '../core/testing/index.js';
import { hashPassword } from '../plugins/vpopmail/passwords.js';
import { SqliteStore } from '../plugins/vpopmail/sqlite-store.js';
import { needs, run } from './helpers.js';

const PASSWORD = 'correct horse';
const LOCKOUT_AFTER = 10; // the default
/** Short waits, so the tests are quick; lockoutAfter stays at its default. */
const FAST_THROTTLE = { delay: '50ms', maxDelay: '200ms' };

type Proto = 'smtp' | 'pop3';

interface Attempt {
  readonly proto: Proto;
  readonly user: string;
  readonly password: string;
  /** The client's address: any of 127/8 on loopback. */
  readonly source?: string;
}

interface AttemptResult {
  /** The SMTP reply code (undefined for POP3 or when the connection failed). */
  readonly code?: number | null;
  /** The whole reply line: `535 5.7.8 ...`, `+OK ...`, `-ERR ...`. */
  readonly reply?: string;
  /** Milliseconds from sending the credentials to the answer. */
  readonly ms?: number;
  /** A client-side failure (connection refused, closed...). */
  readonly error?: string;
}

/**
 * Runs login attempts with Python's smtplib (AUTH PLAIN) or poplib
 * (USER/PASS), as each attempt says, one connection each, over `threads`
 * parallel connections. With `barrier`, the first `threads`
 * connections are all open (greeted, and past EHLO for SMTP) before any of
 * them sends its credentials. Results come back in the attempts' order.
 */
const CLIENT = String.raw`
import json, poplib, smtplib, socket, sys, threading, time
cfg = json.load(sys.stdin)
ports, attempts = cfg['ports'], cfg['attempts']
threads = max(1, min(cfg.get('threads', 1), len(attempts)))
barrier = threading.Barrier(threads, timeout=60) if cfg.get('barrier') else None
lock = threading.Lock()
taken = [0]
results = [None] * len(attempts)

class POP3From(poplib.POP3):
    def __init__(self, host, port, source, timeout):
        self.source = source
        super().__init__(host, port, timeout=timeout)
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))

def take():
    with lock:
        i = taken[0]
        if i >= len(attempts):
            return None
        taken[0] += 1
        return i

def text(b):
    return b.decode('utf-8', 'replace') if isinstance(b, bytes) else str(b)

def smtp_try(a, ready):
    s = smtplib.SMTP('127.0.0.1', ports['smtp'], timeout=60, source_address=(a.get('source', '127.0.0.1'), 0))
    try:
        s.ehlo('client.test')
        ready()
        s.user, s.password = a['user'], a['password']
        t0 = time.perf_counter()
        try:
            code, resp = s.auth('PLAIN', s.auth_plain)
        except smtplib.SMTPAuthenticationError as e:
            code, resp = e.smtp_code, e.smtp_error
        ms = (time.perf_counter() - t0) * 1000
        if code == 235:
            try:
                s.quit()
            except Exception:
                pass
        return {'code': code, 'reply': '%d %s' % (code, text(resp)), 'ms': ms}
    finally:
        s.close()

def pop3_try(a, ready):
    p = POP3From('127.0.0.1', ports['pop3'], a.get('source', '127.0.0.1'), 60)
    try:
        ready()
        p.user(a['user'])
        t0 = time.perf_counter()
        try:
            reply = text(p.pass_(a['password']))
        except poplib.error_proto as e:
            reply = text(e.args[0])
        ms = (time.perf_counter() - t0) * 1000
        if reply.startswith('+OK'):
            p.quit()  # frees the mailbox lock at once
        return {'reply': reply, 'ms': ms}
    finally:
        p.close()

def worker():
    first = [True]
    def ready():
        if first[0] and barrier is not None:
            barrier.wait()
        first[0] = False
    while True:
        i = take()
        if i is None:
            return
        try:
            results[i] = (smtp_try if attempts[i]['proto'] == 'smtp' else pop3_try)(attempts[i], ready)
        except Exception as e:
            results[i] = {'error': repr(e)}
        first[0] = False

pool = [threading.Thread(target=worker) for _ in range(threads)]
for th in pool:
    th.start()
for th in pool:
    th.join()
print(json.dumps(results))
`;

async function logins(r: Rig, attempts: readonly Attempt[], options: { threads?: number; barrier?: boolean } = {}): Promise<AttemptResult[]> {
  const res = await run('python3', ['-c', CLIENT], { input: JSON.stringify({ ports: r.port, attempts, ...options }), timeout: 180_000 });
  if (res.code !== 0) throw new Error(`python3 exited with ${res.code}: ${res.stderr}`);
  return JSON.parse(res.stdout) as AttemptResult[];
}

/** Replies to a login refused as locked out (no password checked), a successful one, a failed one. */
const LOCKED: Record<Proto, RegExp> = { smtp: /^454 4\.7\.0 /, pop3: /^-ERR \[SYS\/TEMP\] / };
const OK: Record<Proto, RegExp> = { smtp: /^235 /, pop3: /^\+OK / };
const FAILED: Record<Proto, RegExp> = { smtp: /^535 /, pop3: /^-ERR \[AUTH\] / };

interface Rig {
  readonly server: TestServer;
  readonly port: Record<Proto, number>;
}

/**
 * A server with an SMTP and a POP3 listener, both served by the vpopmail
 * plugin, and dom.test with alice (scrypt hash) in its store.
 */
async function rig(t: Test, config: Record<string, unknown>, limits: Record<string, unknown> = {}): Promise<Rig> {
  const listenerLimits = { maxConnections: 500, ...limits };
  const server = await startTestServer({
    listeners: [
      { name: 'smtp', allowInsecureAuth: true, limits: listenerLimits, plugins: ['vpopmail'] },
      { name: 'pop3', protocol: 'pop3', allowInsecureAuth: true, limits: listenerLimits, plugins: ['vpopmail'] },
    ],
    pluginOptions: { vpopmail: {} },
    config: { localDomains: ['localhost'], ...config },
  });
  const store = new SqliteStore(path.join(server.dataDir, 'vpopmail.sqlite'));
  t.teardown(async () => {
    store.close();
    await server.close();
  });
  store.addDomain({ name: 'dom.test' });
  store.addUser({ domain: 'dom.test', name: 'alice', passwordHash: await hashPassword(PASSWORD) });
  return { server, port: { smtp: server.ports.smtp!, pop3: server.ports.pop3! } };
}

/**
 * The password checks a listener made, from its log: one line per login
 * decision (SMTP: hook 'auth', action reject/accept/defer; POP3: event
 * 'login', result failed/ok/locked-out), less the lockouts, which check no
 * password.
 */
function passwordChecks(s: TestServer, proto: Proto): Array<Record<string, unknown>> {
  return s.logs.filter((l) => {
    if (l.listener !== proto) return false;
    if (proto === 'pop3') return l.event === 'login' && (l.result === 'failed' || l.result === 'ok');
    if (l.hook !== 'auth' || l.event === 'login') return false;
    return l.action === 'reject' || l.action === 'accept' || (l.action === 'defer' && !/locked out/.test(String(l.reason)));
  });
}

/** Most connections the listener had open at once, from its connect and close log lines. */
function peakConnections(s: TestServer, proto: Proto): number {
  let open = 0;
  let peak = 0;
  for (const l of s.logs) {
    if (l.listener !== proto) continue;
    if (l.event === 'connect') peak = Math.max(peak, ++open);
    else if (l.event === 'close') open--;
  }
  return peak;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

// ---- 2. parallel guesses ----

const CONNECTIONS = 100;
const GUESSES = 200;
/** The right password is guess 151 of 200. */
const RIGHT_GUESS = 150;

// The 100 connections from one IP need the per-IP connection limit (default 20) off: this is about the throttle.
const NO_PER_IP_LIMIT = { maxConnectionsPerIp: 0 };

for (const proto of ['smtp', 'pop3'] as const) {
  t.test(`2. ${CONNECTIONS} parallel connections guessing ${GUESSES} passwords over ${proto}: at most lockoutAfter password checks`, needs('python3'), async (t) => {
    const r = await rig(t, { loginThrottle: FAST_THROTTLE }, NO_PER_IP_LIMIT);
    const guesses: Attempt[] = Array.from({ length: GUESSES }, (_, i) => ({
      proto,
      user: 'alice@dom.test',
      password: i === RIGHT_GUESS ? PASSWORD : `guess-${String(i + 1).padStart(3, '0')}`,
    }));
    const results = await logins(r, guesses, { threads: CONNECTIONS, barrier: true });

    t.same(
      results.filter((x) => x.error !== undefined),
      [],
      'every guess got an answer',
    );
    const peak = peakConnections(r.server, proto);
    t.ok(peak >= CONNECTIONS, `the server had ${peak} connections open at once`);
    const right = results[RIGHT_GUESS]!;
    t.notMatch(right.reply, OK[proto], `the right password (guess ${RIGHT_GUESS + 1}) did not log in: ${right.reply}`);
    t.equal(results.filter((x) => OK[proto].test(x.reply ?? '')).length, 0, 'no guess logged in');

    const checks = passwordChecks(r.server, proto);
    t.ok(checks.length >= 1 && checks.length <= LOCKOUT_AFTER, `${checks.length} password checks for ${GUESSES} guesses over ${CONNECTIONS} parallel connections (at most ${LOCKOUT_AFTER})`);
    t.notOk(
      checks.some((l) => l.action === 'accept'),
      'no login was accepted',
    );
    const failed = results.filter((x) => FAILED[proto].test(x.reply ?? '')).length;
    const locked = results.filter((x) => LOCKED[proto].test(x.reply ?? '')).length;
    t.equal(failed, checks.length, 'each checked guess was answered as a failure');
    t.equal(failed + locked, GUESSES, `the rest were refused as locked out (${locked})`);
  });
}

// ---- 3. other spellings of a locked-out account ----

t.test('3. with alice@dom.test locked out, other spellings of her account are refused too', needs('python3'), async (t) => {
  const r = await rig(t, { loginThrottle: FAST_THROTTLE });
  const spellings = ['alice@dom.test', 'alice%dom.test', 'alice@dom.test.', 'alice%DOM.TEST.'];
  const everySpelling = (source: string): Attempt[] => (['smtp', 'pop3'] as const).flatMap((proto) => spellings.map((user) => ({ proto, user, password: PASSWORD, source })));

  // On a fresh server, from 127.0.0.1: every spelling is alice, and logs in.
  const fresh = everySpelling('127.0.0.1');
  (await logins(r, fresh)).forEach((res, i) => t.match(res.reply, OK[fresh[i]!.proto], `${fresh[i]!.user} logs in over ${fresh[i]!.proto} with her password`));

  // Ten wrong passwords from 127.0.1.1: her account is locked out of every network she has not logged in from.
  const wrong: Attempt[] = Array.from({ length: LOCKOUT_AFTER }, (_, i) => ({ proto: 'smtp', user: 'alice@dom.test', password: `wrong-${i}`, source: '127.0.1.1' }));
  const locking = await logins(r, [...wrong, { proto: 'smtp', user: 'alice@dom.test', password: PASSWORD, source: '127.0.1.1' }]);
  t.same(
    locking.slice(0, LOCKOUT_AFTER).map((x) => x.code),
    Array(LOCKOUT_AFTER).fill(535),
    `${LOCKOUT_AFTER} wrong passwords from 127.0.1.1`,
  );
  t.match(locking[LOCKOUT_AFTER]!.reply, LOCKED.smtp, 'then locked out there');

  // From another network (127.0.2.0/24), with the right password: refused in every spelling, over both protocols.
  const checksBefore = passwordChecks(r.server, 'smtp').length + passwordChecks(r.server, 'pop3').length;
  const elsewhere = everySpelling('127.0.2.1');
  (await logins(r, elsewhere)).forEach((res, i) => {
    const { proto, user } = elsewhere[i]!;
    t.match(res.reply, LOCKED[proto], `${user} over ${proto} from 127.0.2.1 is locked out: ${res.reply}`);
  });
  t.equal(passwordChecks(r.server, 'smtp').length + passwordChecks(r.server, 'pop3').length, checksBefore, 'and no password was checked for them');
  const lockouts = r.server.logs.filter((l) => l.ip === '127.0.2.1' && /locked out/.test(String(l.reason)));
  t.equal(lockouts.length, elsewhere.length, 'each refusal is logged as a lockout');
  t.ok(
    lockouts.every((l) => /by account/.test(String(l.reason))),
    "by the account's count: the IP had no failures",
  );
});

// ---- 4. a lockout button ----

t.test('4. wrong guesses from elsewhere do not lock alice out of a network she logged in from', needs('python3'), async (t) => {
  const r = await rig(t, { loginThrottle: FAST_THROTTLE });
  const alice = (proto: Proto, source: string): Attempt => ({ proto, user: 'alice@dom.test', password: PASSWORD, source });
  // An attacker, one wrong guess from each of 12 addresses of 127.0.4.0/24: no IP's count stops them first.
  const attackers: Attempt[] = Array.from({ length: LOCKOUT_AFTER + 2 }, (_, i) => ({ proto: 'smtp', user: 'alice@dom.test', password: `wrong-${i}`, source: `127.0.4.${i + 1}` }));
  const [first, ...attack] = await logins(r, [alice('smtp', '127.0.3.1'), ...attackers]);
  t.match(first!.reply, OK.smtp, 'alice logs in from 127.0.3.1');
  t.same(
    attack.map((x) => x.code),
    [...Array(LOCKOUT_AFTER).fill(535), 454, 454],
    `the first ${LOCKOUT_AFTER} guesses were checked, then alice's account is locked for unknown networks`,
  );

  const after = [alice('smtp', '127.0.3.1'), alice('smtp', '127.0.3.2'), alice('pop3', '127.0.3.1'), alice('smtp', '127.0.5.1'), alice('pop3', '127.0.5.1')];
  const [home, neighbour, homePop, unknown, unknownPop] = await logins(r, after);
  t.match(home!.reply, OK.smtp, `alice still logs in over smtp from 127.0.3.1: ${home!.reply}`);
  t.match(neighbour!.reply, OK.smtp, `and from 127.0.3.2, the same /24: ${neighbour!.reply}`);
  t.match(homePop!.reply, OK.pop3, `and over pop3 from 127.0.3.1: ${homePop!.reply}`);
  // The documented trade-off: from a network she never logged in from, the account's lockout applies.
  t.match(unknown!.reply, LOCKED.smtp, `refused over smtp from a never-seen network (127.0.5.1): ${unknown!.reply}`);
  t.match(unknownPop!.reply, LOCKED.pop3, `and over pop3: ${unknownPop!.reply}`);
});

// ---- 5. timing ----

t.test('5. an unhosted domain and an unknown user take as long to refuse as a wrong password', needs('python3'), async (t) => {
  // No throttle delay may distort the timing.
  const r = await rig(t, { loginThrottle: { freeFailures: 1000, lockoutAfter: 2000 } });
  const kinds = {
    wrongPassword: { proto: 'smtp', user: 'alice@dom.test', password: 'not her password' },
    unhostedDomain: { proto: 'smtp', user: 'alice@not-hosted.test', password: 'not her password' },
    unknownUser: { proto: 'smtp', user: 'nobody@dom.test', password: 'not her password' },
  } as const;
  const names = Object.keys(kinds) as Array<keyof typeof kinds>;
  const TRIES = 5;
  // Interleaved, so a burst of load weighs on all three alike.
  const attempts: Attempt[] = Array.from({ length: TRIES }, () => names.map((n) => kinds[n])).flat();
  const results = await logins(r, attempts);
  const ms: Record<string, number[]> = {};
  results.forEach((x, i) => {
    t.equal(x.code, 535, `${names[i % names.length]}: 535`);
    (ms[names[i % names.length]!] ??= []).push(x.ms!);
  });
  const m = Object.fromEntries(names.map((n) => [n, median(ms[n]!)])) as Record<keyof typeof kinds, number>;
  const figures = names.map((n) => `${n} ${m[n].toFixed(1)} ms`).join(', ');
  t.ok(m.unhostedDomain >= 0.3 * m.wrongPassword, `a user of an unhosted domain costs a password check (medians: ${figures})`);
  t.ok(m.unknownUser >= 0.3 * m.wrongPassword, `an unknown user of a hosted domain costs a password check (medians: ${figures})`);
});
