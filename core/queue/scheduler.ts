/**
 * The scheduler, qmail-send's job: take every committed message, deliver
 * each recipient through the deliver hook (local) or remote SMTP, retry on
 * temporary failure on qmail's schedule, bounce permanent failures, and
 * remove the message once every recipient is finished.
 *
 * Memory: a waiting message costs one timetable entry (id and due time); its
 * envelope and state are read from disk only while it is being worked on,
 * and at most `maxActive` messages are. A queue of 100,000 messages is
 * 100,000 small map entries, not 100,000 parsed messages.
 *
 * Persistence: per-recipient state (`state/ID.json`) is written after every
 * delivery job, so a restart neither redelivers a recipient already
 * delivered nor forgets when the next try is due.
 *
 * Local recipients of a message are one job: the message is read once for
 * all of them, they are delivered several at once (as many as the job holds
 * local slots), and their outcomes are written once per that many rather
 * than once per recipient (see runLocal for what a crash can redeliver).
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { DeliveryConfig, QueueConfig } from '../config/schema.js';
import { HookScope } from '../hook-scope.js';
import type { Pipeline } from '../pipeline.js';
import { splitAddress } from '../address.js';
import type { Clock } from '../services/clock.js';
import type { Dns } from '../services/dns.js';
import type { LocalDomains } from '../services/local-domains.js';
import type { Metrics, QueueDepth } from '../services/metrics.js';
import { DeliveryContext } from './delivery-context.js';
import { Notices } from './notice.js';
import { SharedMessage } from './shared-message.js';
import { RecentCommits, type Committed } from './recent-commits.js';
import { DeliverySlots, type DestinationLimits } from './slots.js';
import { domainKeys } from './domain-keys.js';
import { ConnectionCache } from './connection-cache.js';
import { MtaSts } from './mta-sts.js';
import { Dane } from './dane.js';
import { SecureResolver } from '../services/secure-dns.js';
import { TlsReports } from './tls-report.js';
import { Timetable } from './timetable.js';
import { deliverRemote, type RemoteOutcome } from './remote.js';
import { nextAttempt, TOO_LONG, type Channel } from './retry.js';
import { initialState, type Envelope, type EnvelopeAddress, type QueueState, type RecipientState, type Spool } from './spool.js';
import { delayNoticeAfter, hasDsn, recipientDsnOf, recipientParams, senderDsnOf, wantsFailureNotice, wantsSuccessNotice } from './dsn.js';

export interface DeliveryRuntime {
  readonly pipeline: Pipeline;
  readonly lease: { acquire(): void; release(): void };
}

export interface SchedulerDeps {
  readonly spool: Spool;
  readonly clock: Clock;
  readonly log: Logger;
  readonly dns: Dns;
  readonly localDomains: LocalDomains;
  readonly hostname: string;
  readonly queue: () => QueueConfig;
  readonly delivery: () => DeliveryConfig;
  readonly runtime: () => DeliveryRuntime;
  readonly isOwnSocket: (ip: string, port: number) => boolean;
  /** Delivery outcomes and times go here. */
  readonly metrics?: Metrics;
  /** Where TLS-RPT counts are kept between reports; without it nothing is counted. */
  readonly tlsReportDir?: string;
}

type Outcome = RemoteOutcome;

interface Active {
  readonly id: string;
  readonly envelope: Envelope;
  readonly state: QueueState;
  /** The stored message from the commit, for the first attempt (RecentCommits). */
  readonly stored?: Buffer;
  jobs: number;
  /** Writes of this message's state, one after the other. */
  writing: Promise<void>;
  /** A write is queued behind the one in flight; it will carry every change made until it starts. */
  writeQueued: boolean;
  cancel?: 'delete' | 'bounce';
}

type Job = (
  | { readonly channel: 'local'; readonly msg: Active; readonly rcpts: RecipientState[]; readonly last: boolean }
  | { readonly channel: 'remote'; readonly msg: Active; readonly domain: string; readonly rcpts: RecipientState[]; readonly last: boolean }
) & { /** performance.now() when it was launched, for the attempt's duration. */ started?: number };

const NO_MAILBOX: Outcome = { kind: 'permanent', status: '5.1.1', text: 'Sorry, no mailbox here by that name. (#5.1.1)' };
/**
 * A remote domain's limits: its entry in queue.destinations, else that of the
 * nearest `.parent` key (smtproutes' order), else concurrencyPerDomain and no
 * rate delay. A rate delay makes deliveries to the domain one at a time, as
 * Postfix's destination_rate_delay does.
 */
export function destinationLimits(domain: string, q: QueueConfig): DestinationLimits {
  for (const key of domainKeys(domain)) {
    const entry = q.destinations[key];
    if (entry) {
      const rateDelay = entry.rateDelay ?? 0;
      return { concurrency: rateDelay > 0 ? 1 : (entry.concurrency ?? q.concurrencyPerDomain), rateDelay };
    }
  }
  return { concurrency: q.concurrencyPerDomain, rateDelay: 0 };
}

/** NOTIFY=DELAY on a site without delayWarning: warned after this long (Postfix's usual delay_warning_time). */
const DELAY_ASKED = 4 * 3600_000;

const ADMIN_BOUNCE = 'This message was bounced by the administrator (yubin queue bounce).';
const RESCAN_MS = 5 * 60_000;
/** After the deliver hooks were aborted at stop, how long their outcomes get to reach the disk. */
const STOP_GRACE_MS = 1000;

export class Scheduler {
  /** Waiting messages and when each is next due. */
  private readonly timetable: Timetable;
  private readonly active = new Map<string, Active>();
  /** Held because their channel's concurrency is 0; looked at again on reload or flush. */
  private readonly held = new Set<string>();
  private readonly forced = new Set<string>();
  private readonly bounceNow = new Set<string>();
  /** Just committed: no state file yet, so none is read. */
  private readonly fresh = new Set<string>();
  /** Envelopes and small messages from this process's commits, so their first attempt reads nothing back. */
  private readonly recent = new RecentCommits();
  /** Taken off the index and being read: in neither the index nor `active` for the moment. */
  private readonly loading = new Set<string>();
  /** Jobs waiting for a delivery slot, and the slots taken. */
  private readonly slots = new DeliverySlots<Job>();
  private readonly inFlight = new Set<Promise<void>>();
  private rescanTimer: NodeJS.Timeout | undefined;
  private pumping = false;
  private repump = false;
  private stopped = false;
  /**
   * Ends when the queue stops for good: every deliver hook in progress is
   * stopped (its signal fires). Not at the start of stop(): a delivery that can finish within the
   * drain time should, or it would be done again after the restart.
   */
  private readonly stopping = new HookScope();
  private idleWaiters: Array<() => void> = [];

  /** What deliver plugins get, and the deliver hook run over it. */
  private readonly delivering: DeliveryContext;
  /** Bounces and delay notices. */
  private readonly notices: Notices;
  /** Set while a destination's rate delay holds a job back. */
  private rateTimer: NodeJS.Timeout | undefined;
  /** Remote SMTP sessions kept between messages to the same destination. */
  readonly sessions: ConnectionCache;
  /** MTA-STS policies of destination domains. */
  readonly mtaSts: MtaSts;
  /** TLSA lookups of MX hosts through the trusted resolver (delivery.dane). */
  readonly dane: Dane;
  /** TLS-RPT counts of sessions to domains with a policy, reported daily. */
  readonly tlsReports: TlsReports | undefined;
  private reportTimer: NodeJS.Timeout | undefined;
  /** delivery.caFile as read, by its path (read again after a reload names another). */
  private caRead: { path: string; pem: Buffer | undefined } | undefined;

  constructor(private readonly deps: SchedulerDeps) {
    this.delivering = new DeliveryContext({ spool: deps.spool, clock: deps.clock, log: deps.log, runtime: deps.runtime, stopping: this.stopping });
    this.notices = new Notices(deps);
    this.sessions = new ConnectionCache(() => deps.delivery().connectionReuse);
    this.tlsReports = deps.tlsReportDir
      ? new TlsReports({ dir: deps.tlsReportDir, dns: deps.dns, spool: deps.spool, log: deps.log, hostname: deps.hostname, now: () => deps.clock.now(), ca: () => this.ca() })
      : undefined;
    this.mtaSts = new MtaSts(deps.dns, () => {
      const d = deps.delivery();
      return { port: d.mtaSts.port, timeoutMs: d.mtaSts.timeout, ca: this.ca() };
    }, () => deps.clock.now());
    this.dane = new Dane(() => {
      const { resolver, timeout } = deps.delivery().dane;
      return new SecureResolver({ server: resolver, timeoutMs: timeout });
    });
    this.timetable = new Timetable(deps.clock);
  }

  private get maxActive(): number {
    const q = this.deps.queue();
    return Math.max(100, 4 * (q.concurrencyLocal + q.concurrencyRemote));
  }

  /**
   * Takes commits from now on. Called before any listener or the control
   * socket opens, so nothing committed during start-up is missed.
   */
  attach(): void {
    this.deps.spool.onCommit = (id, committed) => this.add(id, committed);
  }

  /** Recovers the spool: every committed message is due now (its state says which recipients really are). */
  async start(): Promise<void> {
    this.attach();
    const count = await this.rescan();
    this.deps.log.info({ event: 'queue-start', messages: count }, `queue: ${count} messages recovered`);
    // qmail-send looks at its queue every 25 minutes whatever the triggers said; so do we, more often.
    this.rescanTimer = setInterval(() => void this.rescan().catch(() => undefined), RESCAN_MS);
    this.rescanTimer.unref();
    // Yesterday's TLS reports go out in the first hour of a day (and whatever an earlier run left).
    if (this.tlsReports) {
      const reports = this.tlsReports;
      const sendReports = () => void reports.sendDue().catch((err: Error) => this.deps.log.error({ event: 'tlsrpt', err: err.message }, 'cannot send TLS reports'));
      sendReports();
      this.reportTimer = setInterval(sendReports, 3_600_000);
      this.reportTimer.unref();
    }
    this.pump();
  }

  /** Schedules every message in the spool the scheduler does not know yet; returns how many the spool holds. */
  private async rescan(): Promise<number> {
    const ids = await this.deps.spool.list();
    // A message the scheduler holds in any form is not scheduled a second time: the listing
    // may be older than a delivery that finished meanwhile (a stale entry's file is gone,
    // and loading it finds nothing), but never newer than one that is still running.
    for (const id of ids) {
      if (!this.timetable.has(id) && !this.loading.has(id) && !this.active.has(id) && !this.held.has(id)) this.schedule(id, 0);
    }
    this.pump();
    return ids.length;
  }

  /**
   * A cluster worker died: what it committed but had no time to announce is
   * found by listing the spool again (rather than at the next periodic rescan).
   */
  recover(): void {
    if (this.stopped) return;
    void this.rescan().catch(() => undefined);
  }

  /** A message was just committed (SMTP, bounce, sendmail); by this process when `committed` comes with it. */
  add(id: string, committed?: Committed): void {
    if (this.active.has(id) || this.timetable.has(id)) return;
    this.fresh.add(id);
    if (committed) this.recent.put(id, committed);
    this.schedule(id, this.deps.clock.now());
    this.pump();
  }

  /** Retry everything now (qmail-send's ALRM). */
  flush(): number {
    for (const id of this.held) this.timetable.set(id, 0);
    this.held.clear();
    const count = this.timetable.size + this.active.size;
    for (const id of [...this.timetable.ids()]) {
      this.forced.add(id);
      this.schedule(id, 0);
    }
    this.pump();
    return count;
  }

  /** The config changed (reload): held messages may now go. */
  reconsider(): void {
    for (const id of this.held) this.schedule(id, 0);
    this.held.clear();
    this.pump();
  }

  wake(): void {
    this.pump();
  }

  async delete(id: string): Promise<boolean> {
    const msg = this.active.get(id);
    if (msg) {
      msg.cancel = 'delete';
      return true;
    }
    if (!(await this.deps.spool.has(id))) return false;
    this.unindex(id);
    await this.deps.spool.remove(id);
    this.deps.log.info({ event: 'queue-delete', id }, `message ${id} deleted by the administrator`);
    return true;
  }

  async bounce(id: string): Promise<boolean> {
    const msg = this.active.get(id);
    if (msg) {
      msg.cancel = 'bounce';
      return true;
    }
    if (!(await this.deps.spool.has(id))) return false;
    this.held.delete(id);
    this.bounceNow.add(id);
    this.schedule(id, 0);
    this.pump();
    return true;
  }

  /** Resolves when nothing is due and nothing is being delivered (tests, benchmarks). */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops taking new work and waits (up to `timeoutMs`) for deliveries in progress to finish. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopped = true;
    this.timetable.disarm();
    if (this.rescanTimer) clearInterval(this.rescanTimer);
    this.deps.spool.onCommit = undefined;
    await this.settled(timeoutMs);
    if (this.inFlight.size > 0) {
      // Out of time: deliver hooks still running are told to give up; the pipeline answers
      // them with its 451 at once, and that outcome is written before we return.
      this.stopping.end('queue stopping');
      await this.settled(STOP_GRACE_MS);
    }
    this.sessions.close();
    if (this.rateTimer) clearTimeout(this.rateTimer);
    if (this.reportTimer) clearInterval(this.reportTimer);
    await this.tlsReports?.flush().catch(() => undefined);
  }

  /** Waits up to `ms` for the deliveries in progress (their outcomes on disk included). */
  private async settled(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.inFlight]), new Promise((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }

  private schedule(id: string, at: number): void {
    this.timetable.set(id, at);
  }

  private unindex(id: string): void {
    this.timetable.delete(id);
    this.fresh.delete(id);
    this.recent.take(id);
    this.held.delete(id);
    this.forced.delete(id);
  }

  private isIdle(): boolean {
    // While pumping, a message may be between the index and `active` (being read).
    if (this.active.size || this.inFlight.size || this.pumping) return false;
    return this.timetable.quiet();
  }

  private pump(): void {
    if (this.stopped) return;
    if (this.pumping) {
      this.repump = true;
      return;
    }
    this.pumping = true;
    void this.pumpLoop().finally(() => {
      this.pumping = false;
      if (this.repump) {
        this.repump = false;
        this.pump();
      } else {
        this.arm();
        this.checkIdle();
      }
    });
  }

  private async pumpLoop(): Promise<void> {
    while (!this.stopped && this.active.size < this.maxActive) {
      const id = this.timetable.takeDue();
      if (id === undefined) break;
      const q = this.deps.queue();
      if (q.concurrencyLocal === 0 && q.concurrencyRemote === 0 && !this.bounceNow.has(id)) {
        // Everything is held: nothing to read until the config changes.
        this.held.add(id);
        continue;
      }
      this.loading.add(id);
      try {
        await this.load(id);
      } catch (err) {
        this.deps.log.error({ event: 'queue-error', id, err: (err as Error).message }, `cannot read queued message ${id}; trying again later`);
        this.schedule(id, this.deps.clock.now() + 60_000);
      } finally {
        this.loading.delete(id);
      }
    }
  }

  private arm(): void {
    if (!this.stopped) this.timetable.arm(() => this.pump());
  }

  private checkIdle(): void {
    if (!this.idleWaiters.length || !this.isIdle()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** The recipient's channel is not held (concurrency above 0). */
  private runs(r: RecipientState): boolean {
    const q = this.deps.queue();
    return (this.channelOf(r.address) === 'local' ? q.concurrencyLocal : q.concurrencyRemote) > 0;
  }

  private channelOf(address: string): Channel {
    return this.deps.localDomains.has(splitAddress(address).domain) ? 'local' : 'remote';
  }

  private async load(id: string): Promise<void> {
    const { spool, clock } = this.deps;
    const committed = this.recent.take(id);
    let envelope: Envelope;
    try {
      envelope = committed?.envelope ?? (await spool.readEnvelope(id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // deleted meanwhile
      throw err;
    }
    const state = (this.fresh.delete(id) ? undefined : await spool.readState(id)) ?? initialState(envelope);
    const msg: Active = { id, envelope, state, stored: committed?.message, jobs: 0, writing: Promise.resolve(), writeQueued: false };
    const now = clock.now();
    if (this.bounceNow.delete(id) || state.bounceRequested) {
      state.bounceRequested = false;
      this.failAll(msg, ADMIN_BOUNCE, now);
    }
    const forced = this.forced.delete(id);
    const due = state.recipients.filter((r) => r.status === 'pending' && (forced || r.next <= now));
    const q = this.deps.queue();
    const runnable = due.filter((r) => this.runs(r));
    this.active.set(id, msg);
    if (!runnable.length) {
      await this.finish(msg);
      return;
    }
    // qmail's queuelifetime: an attempt started after birth + lifetime is the last one.
    const last = now >= envelope.received + q.lifetime;
    const local: RecipientState[] = [];
    const remote = new Map<string, RecipientState[]>();
    for (const r of runnable) {
      if (this.channelOf(r.address) === 'local') {
        local.push(r);
      } else {
        const domain = splitAddress(r.address).domain;
        remote.set(domain, [...(remote.get(domain) ?? []), r]);
      }
    }
    if (local.length) this.enqueue({ channel: 'local', msg, rcpts: local, last });
    for (const [domain, rcpts] of remote) this.enqueue({ channel: 'remote', msg, domain, rcpts, last });
    this.dispatch();
  }

  private enqueue(job: Job): void {
    job.msg.jobs++;
    this.slots.wait(job);
  }

  private dispatch(): void {
    // Stopping: no new delivery starts; what waits is recovered from the spool at the next start.
    if (this.stopped) return;
    const q = this.deps.queue();
    const limits: Record<Channel, number> = { local: q.concurrencyLocal, remote: q.concurrencyRemote };
    for (const job of this.slots.take(limits, (domain) => destinationLimits(domain, q))) this.launch(job);
    // A destination's rate delay held a job back: look again when it has passed.
    const wake = this.slots.rateWake;
    if (wake !== undefined && !this.rateTimer) {
      this.rateTimer = setTimeout(() => {
        this.rateTimer = undefined;
        this.dispatch();
      }, Math.max(1, wake - performance.now()));
      this.rateTimer.unref();
    }
  }

  private launch(job: Job): void {
    job.started = performance.now();
    // Tracked until the outcome is on disk, not just until the delivery returns: a stop
    // (SIGTERM) waits for this, so a delivery is never done again after a clean restart.
    const run = this.runJob(job).finally(() => {
      this.inFlight.delete(run);
      this.checkIdle();
    });
    this.inFlight.add(run);
  }

  private async runJob(job: Job): Promise<void> {
    try {
      if (job.channel === 'local') await this.runLocal(job);
      else await this.runRemote(job);
    } catch (err) {
      this.deps.log.error({ event: 'delivery-error', id: job.msg.id, err: (err as Error).message }, 'delivery failed unexpectedly; will retry');
      for (const r of job.rcpts) if (r.lastAttempt !== this.deps.clock.now()) this.record(job, r, { kind: 'temporary', status: '4.3.0', text: `Internal error: ${(err as Error).message}` });
    } finally {
      this.slots.release(job);
    }
    // The next delivery may start while this one's outcome is being written.
    this.dispatch();
    await this.jobDone(job.msg);
  }

  /**
   * Every local recipient of the message from one read of it, as many at
   * once as the job holds local slots; a slot with no recipient left to
   * start is given back at once for the next message. Outcomes are written
   * once for every `width` of them while more remain, so a crash redelivers
   * fewer than twice concurrencyLocal recipients (those finished since the
   * last write, and those finishing during it) — qmail-send could redeliver
   * concurrencylocal, the ones qmail-local finished before they were marked
   * done. The last outcomes are written by jobDone, or not at all when the
   * message is finished and removed.
   */
  private async runLocal(job: Extract<Job, { channel: 'local' }>): Promise<void> {
    const body = new SharedMessage(this.deps.spool, job.msg.id, job.msg.envelope, job.msg.stored);
    const width = this.slots.width(job);
    let next = 0;
    let unwritten = 0;
    const worker = async (): Promise<void> => {
      // Stopping: what is left waits in the spool for the next start, like a job never launched.
      while (next < job.rcpts.length && !(next >= width && this.stopped)) {
        await this.deliverLocal(job, job.rcpts[next++]!, body);
        if (++unwritten >= width && next < job.rcpts.length) {
          unwritten = 0;
          await this.persist(job.msg);
        }
      }
      this.slots.shrink(job);
      this.dispatch();
    };
    await Promise.all(Array.from({ length: width }, worker));
  }

  private async deliverLocal(job: Extract<Job, { channel: 'local' }>, r: RecipientState, body: SharedMessage): Promise<void> {
    const started = performance.now();
    let outcome: Outcome;
    try {
      outcome = (await this.delivering.viaPlugins(job.msg, r, true, body)) ?? NO_MAILBOX;
    } catch (err) {
      // One recipient's fault is its own: the others of the round keep their outcomes.
      this.deps.log.error({ event: 'delivery-error', id: job.msg.id, rcpt: r.address, err: (err as Error).message }, 'delivery failed unexpectedly; will retry');
      outcome = { kind: 'temporary', status: '4.3.0', text: `Internal error: ${(err as Error).message}` };
    }
    this.record(job, r, outcome, started);
  }

  private async runRemote(job: Extract<Job, { channel: 'remote' }>): Promise<void> {
    const viaSmtp: RecipientState[] = [];
    const body = new SharedMessage(this.deps.spool, job.msg.id, job.msg.envelope, job.msg.stored);
    for (const r of job.rcpts) {
      const outcome = await this.delivering.viaPlugins(job.msg, r, false, body);
      if (outcome) this.record(job, r, outcome);
      else viaSmtp.push(r);
    }
    if (!viaSmtp.length) return;
    if (this.deps.localDomains.incomplete()) {
      // A mail store that cannot be read may hold this domain: sent off as remote, our own mail would loop or leave.
      const outcome: Outcome = { kind: 'temporary', status: '4.3.0', text: `Cannot tell now whether ${job.domain} is one of my domains: a mail store is unavailable` };
      for (const r of viaSmtp) this.record(job, r, outcome);
      return;
    }
    const { spool } = this.deps;
    const env = job.msg.envelope;
    const delivery = this.deps.delivery();
    const outcomes = await deliverRemote(
      {
        domain: job.domain,
        sender: env.sender,
        recipients: viaSmtp.map((r) => r.address),
        size: Buffer.byteLength(env.prependHeaders) + env.size,
        // Still in memory from the commit (a small message's first attempt), or read from the spool.
        message: async () => (job.msg.stored ? body.stream() : spool.openMessage(job.msg.id, env)),
        dsn: hasDsn(env) ? { ...senderDsnOf(env.senderParams), recipient: (a) => recipientDsnOf(this.paramsOf(env, a)) } : undefined,
        requireTls: env.senderParams.REQUIRETLS === true,
        binary: typeof env.senderParams.BODY === 'string' && env.senderParams.BODY.toUpperCase() === 'BINARYMIME',
        tlsOptional: env.tlsOptional === true,
      },
      {
        dns: this.deps.dns,
        config: delivery,
        heloName: delivery.heloName ?? this.deps.hostname,
        isOwnSocket: this.deps.isOwnSocket,
        cache: this.sessions,
        mtaSts: delivery.mtaSts.enabled ? this.mtaSts : undefined,
        tlsReports: this.tlsReports,
        ca: this.ca(),
        dane: delivery.dane.enabled ? this.dane : undefined,
      },
    );
    for (const r of viaSmtp) this.record(job, r, outcomes.get(r.address) ?? { kind: 'temporary', status: '4.4.2', text: 'no result from remote delivery' });
  }

  /** `started`: performance.now() when this recipient's attempt began (default: when its job did). */
  private record(job: Job, r: RecipientState, outcome: Outcome, started = job.started): void {
    const now = this.deps.clock.now();
    const env = job.msg.envelope;
    r.attempts++;
    r.lastAttempt = now;
    const base = { event: 'delivery', id: job.msg.id, rcpt: r.address, channel: job.channel, attempt: r.attempts };
    const seconds = started === undefined ? 0 : (performance.now() - started) / 1000;
    if (outcome.kind === 'delivered') {
      r.status = 'delivered';
      delete r.error;
      // RFC 3461 5.2: a next hop that speaks DSN was handed the request and reports itself. Nothing goes to the null sender.
      if (env.sender && wantsSuccessNotice(this.paramsOf(env, r.address)) && !outcome.relayed?.dsn) r.notified = outcome.relayed ? 'relayed' : 'delivered';
      this.deps.metrics?.delivery(job.channel, 'success', seconds, (now - env.received) / 1000);
      this.deps.log.info({ ...base, result: 'success', text: outcome.text }, `delivery ${job.msg.id} to ${r.address}: success: ${outcome.text}`);
      return;
    }
    r.dsnStatus = outcome.status;
    r.remoteMta = outcome.remoteMta;
    r.diagnostic = outcome.diagnostic;
    if (outcome.kind === 'temporary' && !job.last) {
      r.error = outcome.text;
      const q = this.deps.queue();
      r.next = nextAttempt(env.received, now, job.channel, r.attempts, q.retry);
      this.deps.metrics?.delivery(job.channel, 'deferral', seconds, undefined);
      this.deps.log.info({ ...base, result: 'deferral', text: outcome.text, next: new Date(r.next).toISOString() }, `delivery ${job.msg.id} to ${r.address}: deferral: ${outcome.text}`);
      return;
    }
    r.status = 'failed';
    r.error = outcome.kind === 'temporary' ? `${outcome.text}\n${TOO_LONG}` : outcome.text;
    if (outcome.kind === 'temporary') r.dsnStatus = '5.4.7'; // delivery time expired
    this.deps.metrics?.delivery(job.channel, 'failure', seconds, undefined);
    this.deps.log.info({ ...base, result: 'failure', text: r.error }, `delivery ${job.msg.id} to ${r.address}: failure: ${r.error.replace(/\n/g, ' ')}`);
  }

  /** The extra CAs of delivery.caFile; a file that cannot be read is logged once and left out. */
  private ca(): Buffer | undefined {
    const file = this.deps.delivery().caFile;
    if (!file) return undefined;
    if (this.caRead?.path !== file) {
      let pem: Buffer | undefined;
      try {
        pem = readFileSync(file);
      } catch (err) {
        this.deps.log.error({ event: 'config', file, err: (err as Error).message }, `cannot read delivery.caFile ${file}`);
      }
      this.caRead = { path: file, pem };
    }
    return this.caRead.pem;
  }

  /** A recipient's RCPT parameters (NOTIFY, ORCPT), as the envelope keeps them. */
  private paramsOf(env: Envelope, address: string): EnvelopeAddress['params'] | undefined {
    return recipientParams(env.recipients, address);
  }

  private failAll(msg: Active, text: string, now: number): void {
    for (const r of msg.state.recipients) {
      if (r.status !== 'pending') continue;
      r.status = 'failed';
      r.error = text;
      r.dsnStatus = '5.0.0';
      r.lastAttempt = now;
    }
  }

  private async jobDone(msg: Active): Promise<void> {
    msg.jobs--;
    // Other recipients are still in progress: persist what is known now, so
    // a crash cannot redeliver it.
    if (msg.jobs > 0) return this.persist(msg);
    await this.finish(msg);
  }

  /** Writes the message's state; outcomes recorded while a write is in flight share the next one. */
  private persist(msg: Active): Promise<void> {
    if (msg.writeQueued) return msg.writing;
    msg.writeQueued = true;
    msg.writing = msg.writing
      .then(() => {
        msg.writeQueued = false;
        return this.deps.spool.writeState(msg.id, msg.state);
      })
      .catch((err: Error) => this.deps.log.error({ id: msg.id, err: err.message }, 'cannot write queue state'));
    return msg.writing;
  }

  /** Every job of this round is over: bounce what failed, then remove the message or schedule the next round. */
  private async finish(msg: Active): Promise<void> {
    const { spool, log, clock } = this.deps;
    let acted: Active['cancel'];
    try {
      await msg.writing;
      const now = clock.now();
      acted = msg.cancel;
      if (acted === 'bounce') this.failAll(msg, ADMIN_BOUNCE, now);
      if (acted === 'delete') {
        await spool.remove(msg.id);
        log.info({ event: 'queue-delete', id: msg.id }, `message ${msg.id} deleted by the administrator`);
        return;
      }
      const failed = msg.state.recipients.filter((r) => r.status === 'failed' && !r.reported);
      const bounced = failed.filter((r) => wantsFailureNotice(this.paramsOf(msg.envelope, r.address)));
      if (bounced.length) await this.notices.send(msg, bounced, 'failure');
      if (bounced.length < failed.length) {
        const quiet = failed.filter((r) => !bounced.includes(r)).map((r) => r.address);
        log.info({ event: 'bounce', id: msg.id, rcpts: quiet, result: 'not-requested' }, `no bounce for ${quiet.join(', ')} of msg ${msg.id}: the sender asked for none (NOTIFY)`);
      }
      for (const r of failed) r.reported = true;
      const succeeded = msg.state.recipients.filter((r) => r.status === 'delivered' && r.notified && !r.reported);
      if (succeeded.length) {
        await this.notices.send(msg, succeeded, 'success');
        for (const r of succeeded) r.reported = true;
      }
      const pending = msg.state.recipients.filter((r) => r.status === 'pending');
      if (!pending.length) {
        // A report just injected is durable already: the message can go.
        await spool.remove(msg.id);
        log.info({ event: 'queue-end', id: msg.id }, `end msg ${msg.id}`);
        return;
      }
      if (!msg.state.warned && msg.envelope.sender && (msg.envelope.kind ?? 'message') === 'message') {
        const q = this.deps.queue();
        const age = now - msg.envelope.received;
        const late = pending.filter((r) => {
          const after = delayNoticeAfter(this.paramsOf(msg.envelope, r.address), q.delayWarning, DELAY_ASKED);
          return after !== undefined && age >= after;
        });
        if (late.length) {
          await this.notices.send(msg, late, 'delay');
          msg.state.warned = true;
        }
      }
      if (msg.state.recipients.some((r) => r.attempts > 0) || failed.length || succeeded.length) await spool.writeState(msg.id, msg.state);
      // Recipients of a held channel wait for a reload or flush; the others keep their schedule.
      const live = pending.filter((r) => this.runs(r));
      if (live.length) this.schedule(msg.id, Math.min(...live.map((r) => r.next)));
      else this.held.add(msg.id);
    } catch (err) {
      log.error({ event: 'queue-error', id: msg.id, err: (err as Error).message }, `cannot finish message ${msg.id}; trying again later`);
      this.schedule(msg.id, clock.now() + 60_000);
    } finally {
      this.active.delete(msg.id);
      // Asked for while this round was being written up (after the check above): acted on now, as for a message at rest.
      const late = msg.cancel !== acted ? msg.cancel : undefined;
      if (late) void (late === 'delete' ? this.delete(msg.id) : this.bounce(msg.id)).catch((err: Error) => log.error({ event: 'queue-error', id: msg.id, err: err.message }, `cannot ${late} message ${msg.id}`));
      this.pump();
    }
  }

  /**
   * The queue gauges, at scrape time. Telling ready from deferred walks the
   * index (a millisecond for 100,000 waiting messages); channels are known only
   * for the messages being worked on, whose envelopes are in memory.
   */
  depth(): QueueDepth {
    const now = this.deps.clock.now();
    let ready = 0;
    let deferred = 0;
    for (const at of this.timetable.times()) {
      if (at <= now) ready++;
      else deferred++;
    }
    return {
      messages: { ready, deferred, held: this.held.size, active: this.active.size + this.loading.size },
      deliveries: {
        local: { waiting: this.slots.waiting('local'), running: this.slots.runningIn('local') },
        remote: { waiting: this.slots.waiting('remote'), running: this.slots.runningIn('remote') },
      },
    };
  }

  /** Counts for the control socket's status. */
  counts(): { waiting: number; active: number; held: number } {
    return { waiting: this.timetable.size, active: this.active.size, held: this.held.size };
  }

  /** Deliveries running now against their limits, per channel: qmail-send's `status: local 1/10 remote 0/20`. */
  deliveries(): Record<Channel, { running: number; limit: number }> {
    const q = this.deps.queue();
    return { local: { running: this.slots.runningIn('local'), limit: q.concurrencyLocal }, remote: { running: this.slots.runningIn('remote'), limit: q.concurrencyRemote } };
  }
}
