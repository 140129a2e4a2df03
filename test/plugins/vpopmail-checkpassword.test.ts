/** `yubin checkpassword` without Dovecot: the fd 3 input, the fields, the exit codes, through the real CLI. */
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { parseInput, quotaRule } from '../../plugins/vpopmail/checkpassword.js';
import { CLI, tempDir, yubin } from '../helpers.js';

t.test('input and quota rule', async (t) => {
  t.same(parseInput(Buffer.from('alice@example.test\0pw\0<1.2@host>\0')), { login: 'alice@example.test', password: 'pw', timestamp: '<1.2@host>' });
  t.same(parseInput(Buffer.from('alice\0\0\0')), { login: 'alice', password: '', timestamp: '' }, "Dovecot's lookup: no password");
  t.equal(parseInput(Buffer.from('\0pw\0\0')), undefined, 'no login name');
  t.equal(parseInput(Buffer.alloc(513, 'a')), undefined, 'over 512 octets');
  t.equal(quotaRule({ bytes: 1000, count: 10 }), '*:bytes=1000:messages=10');
  t.equal(quotaRule({ bytes: 1000 }), '*:bytes=1000');
  t.equal(quotaRule({}), undefined, 'NOQUOTA: no rule');
});

/** Runs `yubin checkpassword` with `input` on fd 3; PROGRAM writes its environment to fd 4 (Dovecot's way). */
function checkpassword(config: string, input: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; fd4: string; stderr: string }> {
  return new Promise((resolve) => {
    const program = "env | grep -E '^(USER|HOME|EXTRA|AUTHORIZED|userdb_[a-z_0-9]+)=' | sort >&4";
    const child = spawn(process.execPath, [CLI, 'checkpassword', '-c', config, '--', 'sh', '-c', program], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
    });
    let fd4 = '';
    let stderr = '';
    (child.stdio[4] as NodeJS.ReadableStream).on('data', (d: Buffer) => (fd4 += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    (child.stdio[3] as NodeJS.WritableStream).end(input);
    child.on('close', (code) => resolve({ code, fd4, stderr }));
  });
}

t.test('exit codes and what PROGRAM gets', async (t) => {
  const dir = await tempDir(t);
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(config, `dataDir: ${dir}/var\nplugins:\n  vpopmail:\n    defaultDomain: example.test\nlisteners:\n  - name: pop3\n    protocol: pop3\n    listen: 127.0.0.1:0\n    plugins: [vpopmail]\n`);
  t.equal((await yubin(['domain', 'add', 'example.test', '--password', 'pm', '-c', config])).code, 0);
  t.equal((await yubin(['user', 'add', 'alice@example.test', '--password', 'a pw', '--quota', '5000S', '-c', config])).code, 0);
  const home = path.join(dir, 'var/domains/example.test/alice');

  const ok = await checkpassword(config, 'ALICE\0a pw\0\0', { SERVICE: 'imap', TCPREMOTEIP: '192.0.2.7' });
  t.equal(ok.code, 0, ok.stderr);
  const env = Object.fromEntries(ok.fd4.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  t.equal(env.USER, 'alice@example.test', 'the login as yubin names it: default domain, lower case');
  t.equal(env.HOME, home);
  t.equal(env.userdb_mail, `maildir:${home}/Maildir`);
  t.equal(env.userdb_quota_rule, '*:bytes=5000');
  t.equal(env.userdb_quota_rule2, 'Trash:ignore');
  t.equal(env.userdb_uid, String(process.getuid!()), 'the Maildir owner');
  t.same(env.EXTRA!.split(' ').sort(), ['userdb_gid', 'userdb_mail', 'userdb_quota_rule', 'userdb_quota_rule2', 'userdb_uid']);
  const info = JSON.parse((await yubin(['user', 'info', 'alice@example.test', '--json', '-c', config])).stdout) as { lastAuth: { ip: string; service: string } };
  t.match(info.lastAuth, { ip: '192.0.2.7', service: 'imap' }, 'the login recorded');

  t.equal((await checkpassword(config, 'alice@example.test\0wrong\0\0')).code, 1, 'wrong password');
  t.equal((await checkpassword(config, 'bob@example.test\0a pw\0\0')).code, 1, 'no such user');
  t.equal((await checkpassword(config, 'alice@other.test\0a pw\0\0')).code, 1, 'no such domain');
  t.equal((await checkpassword(config, '')).code, 1, 'nothing on fd 3');

  const lookup = await checkpassword(config, 'alice@example.test\0\0\0', { AUTHORIZED: '1' });
  t.equal(lookup.code, 0, "PROGRAM's own code (checkpassword-reply exits 2 here)");
  t.match(lookup.fd4, /^AUTHORIZED=2$/m, 'told the lookup was answered');
  t.equal((await checkpassword(config, 'bob@example.test\0\0\0', { AUTHORIZED: '1' })).code, 3, 'lookup: no such user');

  t.equal((await yubin(['user', 'mod', 'alice@example.test', '--disable', 'imap', '-c', config])).code, 0);
  const disabled = await checkpassword(config, 'alice@example.test\0a pw\0\0', { SERVICE: 'imap' });
  t.equal(disabled.code, 1, 'IMAP disabled');
  t.match(disabled.stderr, /imap disabled for this user/);
  t.equal((await checkpassword(config, 'alice@example.test\0a pw\0\0', { SERVICE: 'pop3' })).code, 0, 'other services still allowed');

  await writeFile(config, 'dataDir: [\n');
  t.equal((await checkpassword(config, 'alice@example.test\0a pw\0\0')).code, 111, 'a config that does not load: temporary failure');
  t.equal((await yubin(['checkpassword', '-c', config])).code, 2, 'no PROGRAM: misuse');
  t.ok((await readFile(config, 'utf8')).length);
});
