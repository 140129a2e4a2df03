/**
 * One POP3 connection (qmail-popup and qmail-pop3d in one): the connect
 * hook and greeting, the AUTHORIZATION state with its login commands, then
 * the TRANSACTION state over the mailbox the auth plugin named.
 *
 * Commands are run strictly one after the other, in the order they came,
 * however many a client pipelines in one packet.
 */
import type net from 'node:net';
import type tls from 'node:tls';
import type { Logger } from 'pino';
import type { ListenerRuntime, SessionEnv } from '../session/runtime.js';
import { Pop3Connection, type Endpoints } from './connection.js';
import { apopVerifier, decodePlain, passwordVerifier } from './credentials.js';
import { Login, oneLine, type Credentials } from './login.js';
import { Pop3Transaction, TRANSACTION_COMMANDS } from './transaction.js';
import { Wire } from './wire.js';
import { ConnectionTimeLimits } from '../time-limits.js';
import { overIpLimit, type IpSlot } from '../session/ip-connections.js';
import { HookScope } from '../hook-scope.js';

const AUTHORIZATION_COMMANDS = new Set(['CAPA', 'STLS', 'USER', 'PASS', 'APOP', 'AUTH', 'QUIT', 'NOOP']);
const PLAINTEXT_REFUSED = '-ERR [AUTH] Plaintext authentication disallowed without TLS, use STLS';
const SHUTTING_DOWN = '-ERR [SYS/TEMP] server shutting down\r\n';

/** APOP timestamps must never repeat (RFC 1939 section 7): a clock that may stand still gets a counter. */
let lastStamp = 0;
function apopTimestamp(hostname: string): string {
  lastStamp = Math.max(Date.now() * 1000, lastStamp + 1);
  return `<${process.pid}.${lastStamp}@${hostname}>`;
}

export class Pop3Session {
  readonly connection: Pop3Connection;
  readonly log: Logger;
  /** Resolves when the session is over and its connection closed. */
  readonly done: Promise<void>;
  private readonly wire: Wire;
  private readonly login: Login;
  /** The listener's idle timeout and connection limit, as connect plugins lower them. */
  private readonly timeLimits: ConnectionTimeLimits;
  /** The greeting's `<...>`; undefined when no auth plugin can check APOP. */
  private readonly timestamp: string | undefined;
  /** Name given with USER, waiting for PASS. */
  private user: string | undefined;
  private tx: Pop3Transaction | undefined;
  private releaseMailbox: (() => void) | undefined;
  /** A command (or the greeting) is being worked on. */
  private busy = false;
  private leaving = false;
  private saidGoodbye = false;
  /** Ends when the connection is gone, however it went: every hook run of this session is stopped with it. */
  private readonly scope = new HookScope();

  constructor(
    private readonly runtime: ListenerRuntime,
    private readonly env: SessionEnv,
    /** What STLS upgrades with; undefined where STLS is not offered. */
    private readonly stlsContext: tls.SecureContext | undefined,
    socket: net.Socket | tls.TLSSocket,
    secure: boolean,
    /** Where the client is: the socket's endpoints, or those a PROXY header gave. */
    endpoints: Endpoints,
    /** This connection's place among those open from its IP. */
    private readonly ipSlot?: IpSlot,
  ) {
    const limits = runtime.config.limits;
    this.wire = new Wire(socket, secure, limits.maxLineLength);
    this.timeLimits = new ConnectionTimeLimits(
      limits.idleTimeout,
      {
        idle: (ms) => this.wire.setIdleTimeout(ms, () => this.idle()),
        expired: (total) => {
          this.log.info({ event: 'timeout', limit: total }, 'connection time limit reached, closing');
          void this.wire.write('-ERR [SYS/TEMP] connection time limit reached\r\n');
          void this.wire.close();
        },
      },
      limits.firstCommandTimeout,
    );
    this.timeLimits.lower({ total: limits.maxConnectionTime });
    // A client that hangs up mid-command is gone for the hooks too. One that pipelined
    // more (QUIT) before its FIN still gets every answer: its hooks run to the end.
    this.wire.onInputEnd = () => this.scope.end('connection closed');
    void this.wire.done.then(() => {
      this.timeLimits.stop();
      this.scope.end('connection closed');
    });
    const id = env.spool.newId();
    this.connection = new Pop3Connection(
      id,
      runtime.name,
      endpoints,
      this.wire,
      (l) => this.timeLimits.lower(l),
    );
    this.log = env.log.child({ listener: runtime.name, conn: id, ip: this.connection.remoteIp });
    this.login = new Login(runtime, env, this.connection, this.log, this.scope);
    this.timestamp = runtime.pipeline.authMechanisms().includes('APOP') ? apopTimestamp(env.hostname) : undefined;
    this.done = this.run();
  }

  /** The server is stopping: an idle session is told so now, a busy one after its current command. */
  shutdown(): void {
    if (this.leaving) return;
    this.leaving = true;
    if (!this.busy || this.wire.awaitingLine) this.goodbye();
  }

  /** Cuts the connection off (a drain that ran out of time). Marks are not applied. */
  destroy(): void {
    this.wire.destroy();
  }

  private async run(): Promise<void> {
    const c = this.connection;
    this.log.info({ event: 'connect', port: c.remotePort, local: `${c.localIp}:${c.localPort}`, secure: c.secure }, 'connection opened');
    let update = false;
    try {
      this.busy = true;
      const greeted = await this.greet();
      this.busy = false;
      if (greeted) update = await this.commands();
    } catch (err) {
      // An I/O failure in the middle of a reply: the client cannot be told in band.
      this.log.error({ err }, 'POP3 session failed');
    } finally {
      // At once, not when the socket is closed: a client that QUITs and logs in again must find the mailbox free.
      this.releaseMailbox?.();
      await this.wire.close();
      c.end(this.log);
      const error = this.wire.error;
      this.log.info({ event: 'close', user: c.authUser, update, ...(error ? { err: error.message } : {}) }, 'connection closed');
    }
  }

  private async greet(): Promise<boolean> {
    const result = await this.runtime.pipeline.run('connect', { connection: this.connection }, this.log, this.scope);
    const a = result.answer;
    const counters = this.env.metrics.listener(this.runtime.name);
    if (a.action !== 'continue' && !result.fault) {
      const plugin = result.plugin ?? 'core';
      this.env.metrics.decision('connect', plugin, a.action);
      this.log.info({ hook: 'connect', plugin, action: a.action, code: a.code, reason: a.text }, `connect: ${plugin} ${a.action}: ${a.text}`);
    }
    if (a.action === 'continue' || a.action === 'accept') {
      const limit = overIpLimit(this.ipSlot, this.connection.state, this.runtime.config.limits.maxConnectionsPerIp);
      if (limit !== undefined) {
        counters.connection('too-many');
        this.env.metrics.decision('connect', 'core', 'disconnect');
        this.log.info({ hook: 'connect', plugin: 'core', action: 'disconnect', code: 421, reason: `${this.ipSlot!.rank} connections from ${this.connection.remoteIp}, limit ${limit}` }, `connect: core disconnect: too many connections from ${this.connection.remoteIp}`);
        await this.say(`-ERR [SYS/TEMP] too many connections from your IP address (${limit}), try again later`);
        return false;
      }
      if (this.leaving) {
        counters.connection('refused');
        this.goodbye();
        return false;
      }
      counters.connection('accepted');
      await this.say(`+OK ${this.env.hostname} POP3 ready${this.timestamp ? ` ${this.timestamp}` : ''}`);
      return true;
    }
    counters.connection('refused');
    if (a.action !== 'disconnect' || !a.silent) await this.say(`-ERR ${oneLine(a.text)}`);
    return false;
  }

  /** Reads and runs commands until the session ends; true when QUIT applied the UPDATE. */
  private async commands(): Promise<boolean> {
    // A connect plugin may have lowered the idle timeout already.
    this.wire.setIdleTimeout(this.timeLimits.idle, () => this.idle());
    for (;;) {
      if (this.leaving) return this.goodbye();
      const event = await this.wire.nextLine();
      if (event.kind === 'end') return false;
      if (event.kind === 'too-long') {
        this.log.info({ event: 'line-too-long', limit: this.runtime.config.limits.maxLineLength }, 'command line too long, closing');
        await this.say('-ERR line too long');
        return false;
      }
      if (this.leaving) return this.goodbye();
      this.busy = true;
      try {
        const next = await this.execute(event.line);
        if (next !== 'continue') return next === 'updated';
      } finally {
        this.busy = false;
      }
    }
  }

  private async execute(line: Buffer): Promise<'continue' | 'close' | 'updated'> {
    // Only ASCII letters make a command; NULs cannot be in any argument (a password with one is a probe).
    const text = line.toString('utf8');
    const space = text.indexOf(' ');
    const verb = (space === -1 ? text : text.slice(0, space)).toUpperCase();
    const rest = space === -1 ? '' : text.slice(space + 1);
    if (!/^[A-Z]{1,8}$/.test(verb) || line.includes(0)) return this.reply('-ERR unknown command');
    const args = rest.trim() === '' ? [] : rest.trim().split(/ +/);

    if (this.tx) {
      if (verb === 'QUIT') return this.quit(this.tx);
      if (verb === 'CAPA') return this.capa();
      if (TRANSACTION_COMMANDS.has(verb)) {
        await this.tx.run(verb, args);
        return 'continue';
      }
      return this.reply(AUTHORIZATION_COMMANDS.has(verb) ? '-ERR already logged in' : '-ERR unknown command');
    }
    switch (verb) {
      case 'CAPA':
        return this.capa();
      case 'NOOP':
        return this.reply('+OK');
      case 'QUIT':
        await this.say(`+OK ${this.env.hostname} POP3 signing off`);
        return 'close';
      case 'STLS':
        return this.stls(args);
      case 'USER':
        if (!this.plaintextAllowed) return this.reply(PLAINTEXT_REFUSED);
        if (args.length !== 1) return this.reply('-ERR syntax error');
        this.user = args[0]!;
        return this.reply('+OK');
      case 'PASS': {
        if (!this.plaintextAllowed) return this.reply(PLAINTEXT_REFUSED);
        const user = this.user;
        if (user === undefined) return this.reply('-ERR USER first');
        // The password is the whole rest of the line: it may contain spaces (RFC 1939 section 7).
        if (rest === '') return this.reply('-ERR syntax error');
        this.user = undefined;
        return this.attempt({ method: 'USER', username: user, password: rest, verify: passwordVerifier(rest) });
      }
      case 'APOP': {
        if (!this.timestamp) return this.reply('-ERR APOP not available');
        if (args.length !== 2 || !/^[0-9a-f]{32}$/i.test(args[1]!)) return this.reply('-ERR syntax error');
        return this.attempt({ method: 'APOP', username: args[0]!, password: undefined, verify: apopVerifier(this.timestamp, args[1]!) });
      }
      case 'AUTH':
        return this.auth(args);
      default:
        return this.reply(TRANSACTION_COMMANDS.has(verb) ? '-ERR [AUTH] not logged in' : '-ERR unknown command');
    }
  }

  /** USER/PASS and SASL PLAIN send the password as is: only inside TLS unless the listener allows it. */
  private get plaintextAllowed(): boolean {
    return this.wire.secure || this.runtime.config.allowInsecureAuth;
  }

  private get stlsOffered(): boolean {
    return this.stlsContext !== undefined && !this.wire.secure && !this.tx;
  }

  private capa(): Promise<'continue'> {
    const caps = ['TOP', 'UIDL', 'RESP-CODES', 'PIPELINING', 'AUTH-RESP-CODE'];
    if (!this.tx && this.plaintextAllowed && this.runtime.pipeline.has('auth')) caps.push('USER', 'SASL PLAIN');
    if (this.stlsOffered) caps.push('STLS');
    caps.push('IMPLEMENTATION yubin');
    return this.multiline('Capability list follows', caps);
  }

  private async stls(args: readonly string[]): Promise<'continue' | 'close'> {
    if (args.length) return this.reply('-ERR syntax error');
    if (!this.stlsOffered) return this.reply(this.wire.secure ? '-ERR already using TLS' : '-ERR STLS not available');
    // Not awaited: the handshake must start before the event loop can read another plaintext byte.
    void this.wire.write('+OK Begin TLS negotiation\r\n');
    this.user = undefined;
    const ok = await this.wire.startTls(this.stlsContext!);
    if (!ok) {
      this.log.info({ event: 'stls', ok: false }, 'TLS handshake failed');
      return 'close';
    }
    this.log.info({ event: 'stls', ok: true }, 'connection upgraded to TLS');
    return 'continue';
  }

  /** AUTH (RFC 5034): PLAIN, with the response on the command line or after a `+ ` continuation. */
  private async auth(args: readonly string[]): Promise<'continue' | 'close'> {
    if (args.length === 0) return this.multiline('', this.plaintextAllowed ? ['PLAIN'] : []);
    if (args.length > 2) return this.reply('-ERR syntax error');
    if (args[0]!.toUpperCase() !== 'PLAIN') return this.reply('-ERR unsupported authentication mechanism');
    if (!this.plaintextAllowed) return this.reply(PLAINTEXT_REFUSED);
    let response = args[1];
    if (response === undefined) {
      await this.say('+ ');
      const event = await this.wire.nextLine();
      if (event.kind === 'end') return 'close';
      if (event.kind === 'too-long') {
        await this.say('-ERR line too long');
        return 'close';
      }
      response = event.line.toString('latin1').trim();
    }
    if (response === '*') return this.reply('-ERR authentication cancelled');
    const plain = decodePlain(response);
    if (!plain) return this.reply('-ERR malformed SASL PLAIN response');
    if (plain.authzid !== '' && plain.authzid !== plain.authcid) return this.reply('-ERR [AUTH] cannot log in as another user');
    return this.attempt({ method: 'PLAIN', username: plain.authcid, password: plain.password, verify: passwordVerifier(plain.password) });
  }

  private async attempt(credentials: Credentials): Promise<'continue' | 'close'> {
    const outcome = await this.login.attempt(credentials);
    if (outcome.ok) {
      this.timeLimits.passed();
      this.tx = new Pop3Transaction(outcome.box, this.wire);
      this.releaseMailbox = outcome.release;
      this.connection.authUser = credentials.username;
      this.user = undefined;
      return this.reply(outcome.reply);
    }
    if (outcome.reply) await this.say(outcome.reply);
    return outcome.close ? 'close' : 'continue';
  }

  private async quit(tx: Pop3Transaction): Promise<'updated'> {
    const s = await tx.quit();
    this.log.info(
      { event: 'quit', user: this.connection.authUser, retrieved: s.retrieved, deleted: s.deleted, failed: s.failed, moved: s.moved, left: s.left },
      `QUIT: ${s.retrieved} retrieved, ${s.deleted} deleted, ${s.left} left`,
    );
    await this.say(s.failed > 0 ? '-ERR [SYS/TEMP] some deleted messages were not removed' : `+OK ${s.deleted} deleted, ${s.left} left`);
    return 'updated';
  }

  private idle(): void {
    if (this.wire.writeBlocked || this.wire.handshaking) {
      // The client stopped reading in the middle of a reply, or of a handshake: nothing more can be said in band.
      this.log.info({ event: 'timeout', while: this.wire.handshaking ? 'tls-handshake' : 'writing' }, 'client stopped, closing');
      this.wire.destroy();
      return;
    }
    if (this.busy && !this.wire.awaitingLine) {
      // Waiting for a plugin or the login throttle, not for the client.
      this.wire.rearmIdle();
      return;
    }
    this.log.info({ event: 'timeout' }, 'idle for too long, closing');
    void this.wire.write('-ERR autologout: idle for too long\r\n');
    void this.wire.close();
  }

  private goodbye(): false {
    if (!this.saidGoodbye) {
      this.saidGoodbye = true;
      void this.wire.write(SHUTTING_DOWN);
      void this.wire.close();
    }
    return false;
  }

  private async multiline(status: string, lines: readonly string[]): Promise<'continue'> {
    await this.wire.write([`+OK${status ? ' ' + status : ''}`, ...lines, '.', ''].join('\r\n'));
    return 'continue';
  }

  private async reply(line: string): Promise<'continue'> {
    await this.say(line);
    return 'continue';
  }

  private say(line: string): Promise<void> {
    return this.wire.write(`${line}\r\n`);
  }
}
