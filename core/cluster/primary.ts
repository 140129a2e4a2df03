/**
 * The primary of a cluster (`workers: N`, N > 1): forks the workers that run
 * the smtp and pop3 listeners (node:cluster, which shares their listening
 * sockets), restarts one that dies, and keeps what must be one for the whole
 * server — Postfix's master and anvil in one:
 *
 * - connection counts per listener and per client IP (SlotBook), so
 *   maxConnections and maxConnectionsPerIp hold across workers;
 * - the failed-login throttle (the primary's LoginThrottle);
 * - POP3 maildrop locks;
 * - commits, handed to the one scheduler (the server in this process).
 *
 * What a worker held when it died (slots, login attempts, locks) is given
 * back at once, and the spool is looked at again: a message the worker
 * committed and answered 250 just before it died may not have been announced.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import type { LoginThrottle, LoginTicket } from '../services/login-throttle.js';
import { isWorkerMessage, WORKER_ENV, type ListenerAddress, type MetricsSnapshot, type PrimaryMessage, type WorkerMessage } from './messages.js';
import { SlotBook, type SlotKeeper } from './slots.js';
import { PendingSlot } from '../session/ip-connections.js';

/** Restart delays after a worker dies: doubling from the first to the last, reset after a worker ran STABLE_MS. */
const RESTART_FIRST_MS = 250;
const RESTART_MAX_MS = 30_000;
const STABLE_MS = 60_000;
/** Longest a worker gets to answer a reload or a metrics scrape. */
const RELOAD_ANSWER_MS = 60_000;
const METRICS_ANSWER_MS = 2_000;

export interface PrimaryOptions {
  readonly workers: number;
  readonly log: Logger;
  /** The primary's throttle (its counts are the cluster's, or the site's in Redis). */
  readonly throttle: () => LoginThrottle;
  /** Connection counts kept elsewhere (Redis, for several nodes); absent: the primary's own SlotBook. */
  readonly slots?: SlotKeeper;
  /** A worker committed this message to the spool. */
  commit(id: string): void;
  /** A worker died: the spool is listed again for what it could not announce. */
  workerLost(): void;
}

/** A worker that exited before it was ready, at start: the server cannot run. */
export class WorkerStartError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

/** One worker slot (1..N) and what its current process holds in the primary. */
class Member {
  worker: Worker | undefined;
  ready = false;
  listeners: readonly ListenerAddress[] = [];
  startedAt = 0;
  restarts = 0;
  readonly slots = new Map<number, { release(): void }>();
  readonly logins = new Map<number, LoginTicket>();
  readonly locks = new Map<number, string>();
  constructor(readonly index: number) {}
}

export class ClusterPrimary {
  private readonly members: Member[] = [];
  private readonly book: SlotKeeper;
  private readonly lockedMailboxes = new Set<string>();
  private readonly waiting = new Map<number, (m: WorkerMessage) => void>();
  private next = 0;
  private stopping = false;

  private constructor(private readonly options: PrimaryOptions) {
    this.book = options.slots ?? new SlotBook();
    for (let i = 1; i <= options.workers; i++) this.members.push(new Member(i));
  }

  /** Forks every worker and resolves once each has bound its listeners. */
  static async start(options: PrimaryOptions): Promise<ClusterPrimary> {
    const primary = new ClusterPrimary(options);
    try {
      await Promise.all(primary.members.map((m) => primary.fork(m, true)));
    } catch (err) {
      await primary.stop(0);
      throw err;
    }
    return primary;
  }

  /** Workers running now. */
  running(): number {
    return this.members.filter((m) => m.ready).length;
  }

  /** The listeners as the workers bound them (each worker binds the same ones). */
  listeners(): readonly ListenerAddress[] {
    return this.members.find((m) => m.ready)?.listeners ?? [];
  }

  /** Connections open on a listener, all workers together. */
  connections(listener: string): number {
    return this.book.total(listener);
  }

  /** SIGHUP: every worker reads the config again; true when all of them took it. */
  async reload(): Promise<boolean> {
    const answers = await Promise.all(
      this.members.filter((m) => m.ready).map(async (m) => {
        const n = ++this.next;
        const a = await this.ask(m, { yubin: 'reload', n }, RELOAD_ANSWER_MS);
        return a?.yubin === 'reloaded' && a.ok;
      }),
    );
    return answers.every(Boolean);
  }

  /** Each worker's metrics; one that does not answer in time is left out of this scrape. */
  async workerMetrics(): Promise<MetricsSnapshot[]> {
    const answers = await Promise.all(
      this.members.filter((m) => m.ready).map(async (m) => {
        const a = await this.ask(m, { yubin: 'metrics?', n: ++this.next }, METRICS_ANSWER_MS);
        return a?.yubin === 'metrics' ? a.metrics : undefined;
      }),
    );
    return answers.filter((a): a is MetricsSnapshot => a !== undefined);
  }

  /** SIGTERM: every worker drains (up to timeoutMs) and exits; one still there after a grace is killed. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    const live = this.members.map((m) => m.worker).filter((w): w is Worker => w !== undefined && !w.isDead());
    await Promise.all(
      live.map(
        (w) =>
          new Promise<void>((resolve) => {
            const kill = setTimeout(() => w.process.kill('SIGKILL'), timeoutMs + 5_000);
            w.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            this.send(w, { yubin: 'stop', timeoutMs });
            if (!w.isConnected()) w.process.kill('SIGTERM');
          }),
      ),
    );
  }

  private fork(m: Member, first: boolean): Promise<void> {
    const log = this.options.log;
    const worker = cluster.fork({ [WORKER_ENV]: String(m.index) });
    m.worker = worker;
    m.ready = false;
    m.startedAt = Date.now();
    return new Promise<void>((resolve, reject) => {
      worker.on('message', (msg: unknown) => {
        if (!isWorkerMessage(msg)) return;
        if (msg.yubin === 'ready') {
          m.ready = true;
          m.listeners = msg.listeners;
          log.info({ event: 'worker-ready', worker: m.index, workerPid: worker.process.pid }, `worker ${m.index} ready, pid ${worker.process.pid}`);
          resolve();
          return;
        }
        this.receive(m, worker, msg);
      });
      // An IPC write to a worker that just died: its exit is handled below.
      worker.on('error', () => undefined);
      worker.once('exit', (code, signal) => {
        const wasReady = m.ready;
        this.forget(m);
        if (m.worker === worker) m.worker = undefined;
        if (this.stopping) {
          log.info({ event: 'worker-stopped', worker: m.index, workerPid: worker.process.pid, code }, `worker ${m.index} stopped`);
          return resolve();
        }
        this.options.workerLost();
        if (first && !wasReady) {
          reject(new WorkerStartError(`worker ${m.index} exited with ${signal ?? `code ${code}`} before it was ready`, typeof code === 'number' && code > 0 ? code : 1));
          return;
        }
        if (Date.now() - m.startedAt > STABLE_MS) m.restarts = 0;
        const delay = Math.min(RESTART_MAX_MS, RESTART_FIRST_MS * 2 ** m.restarts);
        m.restarts++;
        log.error(
          { event: 'worker-exit', worker: m.index, workerPid: worker.process.pid, code, signal, restartIn: delay },
          `worker ${m.index} (pid ${worker.process.pid}) died with ${signal ?? `code ${code}`}; restarting it in ${delay} ms`,
        );
        setTimeout(() => {
          if (this.stopping) return;
          this.fork(m, false).catch(() => undefined);
        }, delay).unref();
      });
    });
  }

  private receive(m: Member, worker: Worker, msg: WorkerMessage): void {
    switch (msg.yubin) {
      case 'commit':
        this.options.commit(msg.id);
        return;
      case 'slot': {
        const slot = this.book.acquire(msg.listener, msg.ip);
        if (!(slot instanceof Promise)) {
          m.slots.set(msg.n, slot);
          this.send(worker, { yubin: 'slot', n: msg.n, rank: slot.rank, total: slot.total });
          return;
        }
        // Counted in Redis: an unslot (or the worker's death) may come before the answer.
        const pending = new PendingSlot(slot);
        m.slots.set(msg.n, pending);
        void pending.ready.then(
          (s) => this.send(worker, { yubin: 'slot', n: msg.n, rank: s.rank, total: s.total }),
          () => undefined,
        );
        return;
      }
      case 'unslot': {
        m.slots.get(msg.n)?.release();
        m.slots.delete(msg.n);
        return;
      }
      case 'login': {
        // take(): the primary's own counts at once, or the site's in Redis (a promise).
        void Promise.resolve(this.options.throttle().take(msg.ip, msg.account)).then(
          (ticket) => {
            // The worker died while Redis answered: nobody will end this attempt.
            if (m.worker !== worker) return ticket.released();
            if (!ticket.verdict.locked) m.logins.set(msg.n, ticket);
            this.send(worker, { yubin: 'login', n: msg.n, verdict: ticket.verdict });
          },
          (err: Error) => {
            this.options.log.error({ event: 'login-throttle', err: err.message }, `login throttle failed: ${err.message}`);
            this.send(worker, { yubin: 'login', n: msg.n, verdict: { locked: true, wait: 0, failures: 0, by: undefined, unavailable: true } });
          },
        );
        return;
      }
      case 'login-end': {
        const ticket = m.logins.get(msg.n);
        m.logins.delete(msg.n);
        ticket?.[msg.how]();
        return;
      }
      case 'lock': {
        const granted = !this.lockedMailboxes.has(msg.key);
        if (granted) {
          this.lockedMailboxes.add(msg.key);
          m.locks.set(msg.n, msg.key);
        }
        this.send(worker, { yubin: 'lock', n: msg.n, granted });
        return;
      }
      case 'unlock': {
        const key = m.locks.get(msg.n);
        m.locks.delete(msg.n);
        if (key !== undefined) this.lockedMailboxes.delete(key);
        return;
      }
      case 'metrics':
      case 'reloaded': {
        const w = this.waiting.get(msg.n);
        this.waiting.delete(msg.n);
        w?.(msg);
        return;
      }
      case 'ready':
        return;
    }
  }

  /** Gives back everything a worker's process held: its connections are gone with it. */
  private forget(m: Member): void {
    m.ready = false;
    for (const s of m.slots.values()) s.release();
    m.slots.clear();
    // An attempt whose answer died with the worker is not counted as a failure (nor as a success).
    for (const t of m.logins.values()) t.released();
    m.logins.clear();
    for (const key of m.locks.values()) this.lockedMailboxes.delete(key);
    m.locks.clear();
  }

  private ask(m: Member, msg: Extract<PrimaryMessage, { yubin: 'reload' | 'metrics?' }>, timeoutMs: number): Promise<WorkerMessage | undefined> {
    const worker = m.worker;
    if (!worker) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(msg.n);
        resolve(undefined);
      }, timeoutMs);
      const done = (a: WorkerMessage | undefined) => {
        clearTimeout(timer);
        this.waiting.delete(msg.n);
        worker.off('exit', gone);
        resolve(a);
      };
      const gone = () => done(undefined);
      worker.once('exit', gone);
      this.waiting.set(msg.n, done);
      this.send(worker, msg);
    });
  }

  private send(worker: Worker, msg: PrimaryMessage): void {
    if (!worker.isConnected()) return;
    worker.send(msg, undefined, () => undefined);
  }
}
