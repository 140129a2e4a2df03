/**
 * The servers of the queue benchmarks, each able to run three scenarios:
 *
 * - local:  accept for localhost and deliver into Maildirs on this disk.
 * - remote: accept from 127.0.0.1 as a relay client and send everything on
 *           over SMTP to one smtp-sink on 127.0.0.1.
 * - hold:   accept and keep every message queued (the RSS benchmark).
 *
 * and, for local and remote, to start with delivery held and release it
 * later (drain mode). Everything listens and connects on 127.0.0.1 only; no
 * server is given a DNS server it could reach outside loopback.
 */
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { freePort, mustRun, processTree, stopChild } from '../smtp-accept/proc.js';
import { controlRequest } from '../../core/queue/control.js';
import {
  countFiles,
  ensureHaraka,
  harakaInstall,
  harakaLogProblems,
  POSTFIX_BASE_CF,
  postfixLogProblems,
  postfixQueues,
  POSTQUEUE,
  POSTSUPER,
  preparePostfix,
  startHaraka,
  startPostfixInstance,
  startYubin,
  tail,
  yubinConfig,
  yubinLogProblems,
  yubinQueued,
  type ServerName,
} from '../smtp-accept/servers.js';

export type Scenario = 'local' | 'remote' | 'hold';

export interface StartOptions {
  readonly scenario: Scenario;
  /** Start with delivery held; release() lets it go. */
  readonly held: boolean;
  /** smtp-sink's port (remote). */
  readonly sinkPort?: number;
  /** Recipients per message smtp-source will send (Postfix needs them in its mailbox map). */
  readonly rcpts: number;
}

export interface QueueServer {
  readonly name: ServerName;
  readonly port: number;
  readonly greeting: string;
  /** The PID whose process (tree) is measured. */
  readonly rootPid: number;
  pids(): number[];
  /** Messages in the server's queue, from its spool on disk (0 = all delivered and removed). */
  queued(): number;
  /** Messages queued and parked (drain mode and RSS: the fill is complete when this reaches N). */
  heldCount(): number;
  /** Maildir files delivered (local scenario; counted under the server's own mail root). */
  delivered(): number;
  /** Lets held delivery go. */
  release(): Promise<void>;
  /** Resolves true once a server restarted on a full queue has taken all of it in (undefined: no way to tell, watch CPU instead). */
  recovered?(): Promise<boolean | undefined>;
  stop(): Promise<void>;
  logTail(): string;
  problems(): string[];
}

export interface QueueServerSpec {
  readonly name: ServerName;
  version?: string;
  unavailable?: string;
  readonly multiProcess: boolean;
  /** What the setup is, per scenario, for the report. */
  describe(scenario: Scenario): string;
  /** Is the queue durable (fsynced before the 250)? */
  readonly durable: boolean;
  readonly scenarios: readonly Scenario[];
  prepare(): Promise<void>;
  /** Starts in dir; a dir that already has a queue (RSS restart) keeps it. */
  start(dir: string, o: StartOptions): Promise<QueueServer>;
}

/** The recipient smtp-source is given (-t); with -r N it sends postmaster, 2postmaster, ..., Npostmaster. */
export const LOCAL_RCPT = 'postmaster@localhost';
export const REMOTE_RCPT = 'user@remote.bench.test';

/** The addresses smtp-source generates from -t ADDR -r N. */
export function smtpSourceRecipients(addr: string, n: number): string[] {
  return [addr, ...Array.from({ length: Math.max(0, n - 1) }, (_, i) => `${i + 2}${addr}`)];
}

/** Files in DIR/DOMAIN/USER/Maildir/new, over every domain and user. */
export function countMaildirNew(root: string): number {
  let n = 0;
  const list = (d: string) => {
    try {
      return readdirSync(d);
    } catch {
      return [];
    }
  };
  for (const domain of list(root)) {
    for (const user of list(path.join(root, domain))) n += list(path.join(root, domain, user, 'Maildir/new')).length;
  }
  return n;
}

// ---------------------------------------------------------------- yubin

/** yubin's control socket: {"cmd":"status"} answers the scheduler's waiting / active / held counts. */
async function yubinStatus(dataDir: string): Promise<{ waiting?: number; active?: number; held?: number } | undefined> {
  const res = await controlRequest(dataDir, { cmd: 'status' }, 5000).catch(() => undefined);
  return res?.ok ? res : undefined;
}

export function yubinQ(repoRoot: string, dist?: string): QueueServerSpec {
  const cli = path.join(dist ?? path.join(repoRoot, 'dist'), 'core/cli.js');
  const queueBlock = (o: StartOptions, held: boolean) => {
    if (o.scenario === 'hold' || held) return '{ concurrencyLocal: 0, concurrencyRemote: 0 }';
    // local: 10 local deliveries at once (the default); remote channel held so a bounce would stay visible in the queue.
    if (o.scenario === 'local') return '{ concurrencyLocal: 10, concurrencyRemote: 0 }';
    // remote: 20 at once; every message goes to one domain, so the per-domain limit (default 10) is raised to 20 too.
    return '{ concurrencyLocal: 0, concurrencyRemote: 20, concurrencyPerDomain: 20 }';
  };
  return {
    name: 'yubin',
    multiProcess: false,
    durable: true,
    scenarios: ['local', 'remote', 'hold'],
    describe: (s) =>
      ({
        local: 'one process; delivery.plugins [maildir] (dataDir/mail/DOMAIN/USER/Maildir, fsynced), queue concurrencyLocal 10 (default), concurrencyRemote 0; drain: started with concurrencyLocal 0, released by rewriting the config and SIGHUP',
        remote: 'one process; tcprules 127.:allow,RELAYCLIENT=""; delivery.smarthost { host: 127.0.0.1, port: SINK, tls: none } (no DNS); queue concurrencyRemote 20, concurrencyPerDomain 20; SMTP sessions reused between messages (delivery.connectionReuse defaults: 100 messages, 5 s idle; before 72d4ccc one connection per message); drain: started with concurrencyRemote 0, released by config rewrite + SIGHUP',
        hold: 'one process; queue concurrencyLocal 0 and concurrencyRemote 0 (held: every message stays in the spool, indexed by the scheduler)',
      })[s],
    async prepare() {
      if (!existsSync(cli)) this.unavailable = `${cli} is missing: build with npx tsc -p . first`;
      this.version = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
    },
    async start(dir, o) {
      const port = await freePort();
      const config = {
        port,
        tcpRules: o.scenario === 'remote' ? '127.:allow,RELAYCLIENT=""\n:allow\n' : '127.:allow,RBLSMTPD=""\n:allow\n',
        queue: queueBlock(o, o.held),
        delivery:
          o.scenario === 'local'
            ? '{ plugins: [maildir] }'
            : o.scenario === 'remote'
              ? `{ smarthost: { host: 127.0.0.1, port: ${o.sinkPort}, tls: none } }`
              : undefined,
        dnsPort: await freePort(),
      };
      const y = await startYubin(cli, dir, config);
      const dataDir = path.join(dir, 'var');
      return {
        name: 'yubin',
        port,
        greeting: y.greeting,
        rootPid: y.child.pid!,
        pids: () => [y.child.pid!],
        queued: () => yubinQueued(dir),
        heldCount: () => yubinQueued(dir),
        delivered: () => countMaildirNew(path.join(dataDir, 'mail')),
        async release() {
          writeFileSync(y.configFile, yubinConfig({ ...config, queue: queueBlock(o, false) }));
          process.kill(y.child.pid!, 'SIGHUP');
        },
        async recovered() {
          const s = await yubinStatus(dataDir);
          if (!s) return false;
          return (s.waiting ?? 0) === 0 && (s.active ?? 0) === 0;
        },
        stop: () => stopChild(y.child, 'SIGTERM', 60_000),
        logTail: () => tail(y.logFile),
        problems: () => yubinLogProblems(y.logFile),
      };
    },
  };
}

// ---------------------------------------------------------------- Haraka

/**
 * Haraka as a relay with its outbound queue: every client is a relay client,
 * every recipient is accepted, and the message goes to Haraka's outbound
 * queue (queue_outbound: a file in DIR/queue, written with fsync before the
 * 250). Delivery goes to the smtp-sink (get_mx answers 127.0.0.1:SINK), or
 * nowhere while the gate file exists: send_email waits, so the messages stay
 * queued in memory and on disk (drain mode, RSS).
 */
const HARAKA_OUTBOUND_PLUGIN = `'use strict'
// yubin bench: relay everything into Haraka's outbound queue; deliver to the smtp-sink.
const fs = require('node:fs')
const sinkPort = Number(process.env.BENCH_SINK_PORT || 0)
const gate = process.env.BENCH_GATE_FILE
let held = !!gate && fs.existsSync(gate)
let waiting = []
exports.register = function () {
    if (!gate) return
    setInterval(() => {
        held = fs.existsSync(gate)
        if (held || !waiting.length) return
        const w = waiting
        waiting = []
        for (const next of w) next()
    }, 50).unref()
}
exports.hook_lookup_rdns = function (next) { next(OK, 'localhost') }
exports.hook_connect = function (next, connection) { connection.relaying = true; next() }
exports.hook_rcpt = function (next) { next(OK) }
exports.hook_send_email = function (next) {
    if (held) waiting.push(next)
    else next()
}
exports.hook_get_mx = function (next) {
    if (sinkPort) next(OK, { exchange: '127.0.0.1', port: sinkPort, priority: 0 })
    else next(DENYSOFT, 'no smtp-sink in this benchmark')
}
`;

export function harakaQ(repoRoot: string, install: boolean): QueueServerSpec {
  const h = harakaInstall(repoRoot);
  return {
    name: 'haraka',
    multiProcess: false,
    durable: true,
    // No local delivery in Haraka: it takes mail and relays it, or hands it to a plugin.
    scenarios: ['remote', 'hold'],
    describe: (s) =>
      ({
        local: 'not run: Haraka has no local (Maildir) delivery',
        remote: 'Haraka 3.3, nodes=0, every client relaying, outbound queue (DIR/queue, FsyncWriteStream: durable), outbound.ini concurrency_max=20, enable_tls=false, a get_mx hook answering 127.0.0.1:SINK (no DNS); drain: a send_email hook parks every delivery until a gate file is removed (checked every 50 ms)',
        hold: 'Haraka 3.3, nodes=0, every client relaying, outbound queue (DIR/queue, fsynced files), concurrency_max=20, delivery parked by a send_email hook: each message stays in the outbound queue in memory (HMailItem) and on disk',
      })[s],
    async prepare() {
      const why = await ensureHaraka(repoRoot, install);
      if (why) this.unavailable = why;
      this.version = h.version();
    },
    async start(dir, o) {
      const port = await freePort();
      const gate = path.join(dir, 'hold.gate');
      mkdirSync(dir, { recursive: true });
      if (o.held || o.scenario === 'hold') writeFileSync(gate, 'delivery held\n');
      else if (existsSync(gate)) unlinkSync(gate);
      const queueDir = path.join(dir, 'queue');
      const p = await startHaraka(repoRoot, dir, {
        port,
        pluginName: 'bench_outbound',
        pluginSource: HARAKA_OUTBOUND_PLUGIN,
        // bench_outbound.timeout 0: no time limit on our hooks (Haraka's default, 30 s, would end a parked send_email with DENYSOFT).
        files: { 'outbound.ini': 'concurrency_max=20\nenable_tls=false\nlocal_mx_ok=true\n', 'bench_outbound.timeout': '0\n' },
        env: { BENCH_GATE_FILE: gate, BENCH_SINK_PORT: String(o.sinkPort ?? 0) },
      });
      return {
        name: 'haraka',
        port,
        greeting: p.greeting,
        rootPid: p.child.pid!,
        pids: () => [p.child.pid!],
        queued: () => countFiles(queueDir),
        // Temporary files are dot-files; a committed outbound message has its final name.
        heldCount: () => {
          try {
            return readdirSync(queueDir).filter((n) => !n.startsWith('.')).length;
          } catch {
            return 0;
          }
        },
        delivered: () => 0,
        async release() {
          if (existsSync(gate)) unlinkSync(gate);
        },
        stop: () => stopChild(p.child, 'SIGINT', 30_000),
        logTail: () => tail(p.logFile),
        problems: () => harakaLogProblems(p.logFile),
      };
    },
  };
}

// ---------------------------------------------------------------- Postfix

/** Every message accepted goes to the hold queue (an access action that applies to the whole message). */
const HOLD_CF = ['# Delivery held: every accepted message is put on hold.', 'smtpd_client_restrictions = check_client_access static:HOLD'];

async function uidGid(user: string): Promise<{ uid: number; gid: number }> {
  return { uid: Number((await mustRun('id', ['-u', user])).stdout.trim()), gid: Number((await mustRun('id', ['-g', user])).stdout.trim()) };
}

export function postfixQ(install: boolean): QueueServerSpec {
  return {
    name: 'postfix',
    multiProcess: true,
    durable: true,
    scenarios: ['local', 'remote', 'hold'],
    describe: (s) =>
      ({
        local: 'Postfix 3.7 private instance, virtual(8) delivery: virtual_mailbox_domains = localhost, virtual_mailbox_maps = texthash (user -> localhost/USER/Maildir/), virtual_uid/gid_maps = static:nobody, defaults otherwise (virtual concurrency 20 = default_destination_concurrency_limit, in_flow_delay 1s); drain: smtpd_client_restrictions = check_client_access static:HOLD puts every message on hold, released by postsuper -H ALL + postqueue -f',
        remote: 'Postfix 3.7 private instance, relayhost = [127.0.0.1]:SINK, default_transport smtp, default_destination_concurrency_limit = 20, no DNS, connection cache on demand (default); drain: every message put on hold (check_client_access static:HOLD), released by postsuper -H ALL + postqueue -f',
        hold: 'Postfix 3.7 private instance as for local, with check_client_access static:HOLD: every message is queued durably and put in the hold queue (on disk; qmgr never loads it)',
      })[s],
    async prepare() {
      const r = await preparePostfix(install);
      this.version = r.version;
      if (r.unavailable) this.unavailable = r.unavailable;
    },
    async start(dir, o) {
      const port = await freePort();
      const etc = path.join(dir, 'etc');
      const mail = path.join(dir, 'mail');
      mkdirSync(etc, { recursive: true });
      let main = POSTFIX_BASE_CF(dir);
      if (o.scenario === 'local' || o.scenario === 'hold') {
        // virtual(8) writes as this user: the mail root must be its own.
        const nobody = await uidGid('nobody');
        mkdirSync(mail, { recursive: true });
        chownSync(mail, nobody.uid, nobody.gid);
        const users = smtpSourceRecipients(LOCAL_RCPT, Math.max(o.rcpts, 1));
        writeFileSync(path.join(etc, 'vmailbox'), users.map((u) => `${u} localhost/${u.split('@')[0]}/Maildir/\n`).join(''));
        main += [
          '# Local delivery into Maildirs (virtual(8)), for localhost only.',
          'mydestination =',
          'local_recipient_maps =',
          'virtual_mailbox_domains = localhost',
          `virtual_mailbox_base = ${mail}`,
          `virtual_mailbox_maps = texthash:${etc}/vmailbox`,
          `virtual_uid_maps = static:${nobody.uid}`,
          `virtual_gid_maps = static:${nobody.gid}`,
          'virtual_transport = virtual',
          'default_transport = discard',
          'relay_transport = discard',
          ...(o.held || o.scenario === 'hold' ? HOLD_CF : []),
          '',
        ].join('\n');
      } else {
        main += [
          '# Relay everything to the smtp-sink.',
          'mydestination =',
          'local_recipient_maps =',
          `relayhost = [127.0.0.1]:${o.sinkPort}`,
          'default_transport = smtp',
          'relay_transport = smtp',
          'default_destination_concurrency_limit = 20',
          'smtp_tls_security_level = none',
          ...(o.held ? HOLD_CF : []),
          '',
        ].join('\n');
      }
      const pf = await startPostfixInstance(dir, port, main);
      const held = o.held || o.scenario === 'hold';
      return {
        name: 'postfix',
        port,
        greeting: pf.greeting,
        rootPid: pf.masterPid,
        pids: () => processTree(pf.masterPid),
        queued: () => Object.values(postfixQueues(pf.spool)).reduce((a, b) => a + b, 0),
        // Held messages go straight from cleanup to the hold queue; qmgr never sees them.
        heldCount: () => postfixQueues(pf.spool).hold,
        delivered: () => countMaildirNew(mail),
        async release() {
          if (!held) return;
          // New mail is no longer held (not that any comes), then: hold -> deferred, and qmgr told to scan deferred now.
          await mustRun(POSTSUPER, ['-c', pf.etc, '-H', 'ALL']);
          await mustRun(POSTQUEUE, ['-c', pf.etc, '-f']);
        },
        stop: pf.stop,
        logTail: () => tail(pf.maillog),
        problems: () => postfixLogProblems(pf.maillog),
      };
    },
  };
}
