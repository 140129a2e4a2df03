/**
 * What a Dovecot IMAP login costs with yubin's accounts: LOGIN timed end to
 * end (python imaplib, loopback) against three private Dovecots:
 *
 * - passdb checkpassword running `yubin checkpassword` (a Node start and an
 *   scrypt check per login);
 * - passdb lua (config/examples/dovecot-yubin.lua) asking a running
 *   `yubin serve` over its login socket (an scrypt check per login, no start);
 * - the same with Dovecot's auth cache (repeated logins skip the program);
 * - passdb passwd-file with a SHA512-CRYPT hash (Dovecot alone: the floor).
 *
 * `node dist/bench/dovecot-login/run.js [N]` (N logins each, default 50); prints medians.
 */
import { chmod, chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { asMailUser, luaAuth, mailUser, startDovecot, type DovecotPeer } from '../../test/peers/dovecot.js';

const CLI = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../core/cli.js');
const PASSWORD = 'alice pw';
const N = Number(process.argv[2] ?? 50);

function sh(cmd: readonly string[], input?: string): string {
  const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${cmd.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Milliseconds of each LOGIN (connection already open), measured in Python. */
function logins(port: number, n: number): number[] {
  const script = `
import imaplib, time, json
out = []
for i in range(${n}):
    m = imaplib.IMAP4('127.0.0.1', ${port})
    t = time.perf_counter()
    m.login('alice@example.test', ${JSON.stringify(PASSWORD)})
    out.append((time.perf_counter() - t) * 1000)
    m.logout()
print(json.dumps(out))
`;
  return JSON.parse(sh(['python3', '-c', script])) as number[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

const user = mailUser();
const dir = await mkdtemp(path.join(os.tmpdir(), 'yubin-dovecot-bench-'));
const peers: DovecotPeer[] = [];
const stops: Array<() => Promise<void>> = [];
try {
  if (process.getuid!() === 0) await chown(dir, user.uid, user.gid);
  await chmod(dir, 0o755);
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(config, `dataDir: ${dir}/var\nplugins:\n  vpopmail: { authSocket: auth.sock }\nlisteners:\n  - name: pop3\n    protocol: pop3\n    listen: 127.0.0.1:0\n    plugins: [vpopmail]\n`);
  const y = (...args: string[]) => sh(asMailUser(user, [process.execPath, CLI, ...args, '-c', config]));
  y('domain', 'add', 'example.test', '--password', 'pm pw');
  y('user', 'add', 'alice@example.test', '--password', PASSWORD, '--quota', '1000000S');
  const maildir = path.join(dir, 'var/domains/example.test/alice/Maildir');
  const checkpassword = `passdb {\n  driver = checkpassword\n  args = ${process.execPath} ${CLI} checkpassword -c ${config}\n}\nuserdb {\n  driver = prefetch\n}`;
  const hash = sh(['doveadm', 'pw', '-s', 'SHA512-CRYPT', '-p', PASSWORD]).trim();
  await writeFile(path.join(dir, 'passwd'), `alice@example.test:${hash}:${user.uid}:${user.gid}::${path.dirname(maildir)}::userdb_mail=maildir:${maildir}\n`);
  const passwdFile = `passdb {\n  driver = passwd-file\n  args = ${dir}/passwd\n}\nuserdb {\n  driver = passwd-file\n  args = ${dir}/passwd\n}`;
  // The running server the Lua script asks.
  const [cmd, ...args] = asMailUser(user, [process.execPath, CLI, 'serve', '-c', config]);
  const server = spawn(cmd!, args, { stdio: 'ignore' });
  stops.push(async () => void server.kill('SIGTERM'));
  const socket = path.join(dir, 'var/auth.sock');
  for (let i = 0; i < 200 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 50));
  const luaAuthBlock = await luaAuth(dir, socket, user);
  const cases: Array<[string, string, string]> = [
    ['checkpassword (yubin checkpassword, scrypt)', checkpassword, ''],
    ['lua passdb asking yubin serve over its socket (scrypt)', luaAuthBlock, ''],
    ['checkpassword + auth_cache (repeated logins)', checkpassword, 'auth_cache_size = 1M\nauth_cache_ttl = 5 min'],
    ['passwd-file, SHA512-CRYPT', passwdFile, ''],
  ];
  for (const [name, auth, extra] of cases) {
    const sub = path.join(dir, `dovecot-${peers.length}`);
    sh(['mkdir', '-m', '755', sub]);
    const peer = await startDovecot({ dir: sub, user, auth, extra });
    peers.push(peer);
    logins(peer.port, 2); // warm: the first imap/auth processes started, the cache filled
    const ms = logins(peer.port, N);
    console.log(`${name}: median ${median(ms).toFixed(1)} ms, min ${Math.min(...ms).toFixed(1)}, max ${Math.max(...ms).toFixed(1)} (N=${N})`);
    await peer.stop();
  }
} finally {
  for (const p of peers) await p.stop();
  for (const stop of stops) await stop();
  await rm(dir, { recursive: true, force: true });
}
