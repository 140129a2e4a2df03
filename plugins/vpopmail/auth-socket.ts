/**
 * The vpopmail plugin's login service for Dovecot, served by the running
 * server on a UNIX socket (`authSocket:`): Dovecot's Lua passdb and userdb
 * (config/examples/dovecot-yubin.lua) ask it instead of starting
 * `yubin checkpassword` for each login, which costs a Node start (seconds on
 * a busy machine). The answer is the same as checkpassword's, from the same
 * code, and here yubin's failed-login throttle applies as well: an attacker
 * guessing over IMAP is counted with the guesses over SMTP and POP3 (across
 * nodes when the throttle is shared through Redis).
 *
 * One request per line, fields separated by tabs and percent-encoded:
 *   PASS <login> <password> <service> <client-ip>   a login to check
 *   USER <login> <service>                          a userdb lookup, no password
 * One reply line:
 *   OK <key=value>...   USER and the userdb fields, each `userdb_`-prefixed
 *   NOUSER              no such user
 *   FAIL <reason>       refused (wrong password, service disabled, locked out)
 *   TEMP <reason>       cannot tell now (the store is down)
 * The socket is made with mode 0660 (its directory decides who may reach it):
 * whoever can connect may try passwords, as through any login service.
 */
import { chmod, unlink } from 'node:fs/promises';
import net from 'node:net';
import type { Logger } from 'pino';
import { loginTurn, type LoginThrottle } from '../../core/index.js';
import { checkLogin, mailboxOwner, userEnvironment } from './checkpassword.js';
import { parseLogin } from './names.js';
import type { VpopmailOptions } from './options.js';
import type { MailStore } from './store.js';

/** A request line longer than this is refused: a login and a password fit many times over. */
const MAX_LINE = 4096;

const enc = (s: string) => encodeURIComponent(s);
const dec = (s: string) => decodeURIComponent(s);

export interface AuthSocketDeps {
  readonly store: MailStore;
  readonly options: VpopmailOptions;
  readonly root: string;
  readonly throttle: LoginThrottle;
  readonly log: Logger;
  readonly now: () => number;
}

/** One request line to its reply line. */
export async function answerLine(line: string, deps: AuthSocketDeps): Promise<string> {
  const [verb, ...raw] = line.split('\t');
  let fields: string[];
  try {
    fields = raw.map(dec);
  } catch {
    return 'FAIL\tbad encoding';
  }
  if (verb !== 'PASS' && verb !== 'USER') return 'FAIL\tunknown request';
  const lookup = verb === 'USER';
  const [login = '', ...rest] = fields;
  const password = lookup ? '' : (rest[0] ?? '');
  const service = (lookup ? rest[0] : rest[1]) || undefined;
  const ip = (lookup ? undefined : rest[2]) || '';
  if (!login) return 'FAIL\tno login name';
  const who = parseLogin(login, deps.options.defaultDomain);
  const account = who ? `${who.name}@${who.domain}` : login.toLowerCase();
  // Lookups check no password, so they are not throttled; logins are, by IP and account as over SMTP and POP3.
  const ticket = lookup ? undefined : await loginTurn(deps.throttle, ip, account, login, service ?? 'dovecot', deps.log);
  if (ticket?.verdict.locked) {
    deps.log.info({ event: 'auth', service, user: login, ip, action: 'defer' }, `dovecot login of ${login} from ${ip}: locked out after ${ticket.verdict.failures} failed logins`);
    return 'FAIL\tlocked out';
  }
  try {
    const verdict = await checkLogin(deps.store, deps.options, { input: { login, password, timestamp: '' }, lookup, service, remoteIp: ip, now: deps.now() });
    if (verdict.kind !== 'ok') {
      ticket?.failed();
      if (!lookup) deps.log.info({ event: 'auth', service, user: login, ip, action: 'reject', reason: verdict.why }, `dovecot login of ${login} from ${ip} refused: ${verdict.why}`);
      return verdict.kind === 'no-user' ? 'NOUSER' : `FAIL\t${enc(verdict.why)}`;
    }
    ticket?.succeeded();
    const env = userEnvironment(deps.root, verdict.user, await mailboxOwner(deps.root, verdict.user));
    const out = [`user=${enc(env.USER!)}`, `userdb_home=${enc(env.HOME!)}`];
    for (const key of env.EXTRA!.split(' ')) out.push(`${key}=${enc(env[key]!)}`);
    if (!lookup) deps.log.info({ event: 'auth', service, user: env.USER, ip, action: 'accept' }, `dovecot login of ${env.USER} from ${ip}`);
    return `OK\t${out.join('\t')}`;
  } catch (err) {
    ticket?.released();
    deps.log.error({ event: 'auth', service, user: login, err: (err as Error).message }, `dovecot login of ${login}: ${(err as Error).message}`);
    return `TEMP\t${enc((err as Error).message)}`;
  }
}

/** Whether something already answers on the socket (another worker of this server): then it is not ours to remove. */
function answering(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

export async function serveAuthSocket(path: string, deps: AuthSocketDeps): Promise<() => Promise<void>> {
  if (!(await answering(path))) await unlink(path).catch(() => undefined);
  const server = net.createServer((socket) => {
    let buf = '';
    let queue = Promise.resolve();
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_LINE && !buf.includes('\n')) {
        socket.end('FAIL\tline too long\n');
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        // Answers in the order asked, one at a time per connection.
        queue = queue.then(async () => {
          const reply = await answerLine(line, deps);
          if (!socket.destroyed) socket.write(`${reply}\n`);
        });
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  await chmod(path, 0o660).catch(() => undefined);
  deps.log.info({ event: 'auth-socket', path }, `login service for Dovecot on ${path}`);
  return () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
    });
}
