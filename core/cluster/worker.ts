/**
 * A cluster worker's side of the IPC channel (`workers: N`): the worker runs
 * the smtp and pop3 listeners and writes into the spool; everything that
 * must be one for the whole server is the primary's, and asked for here:
 *
 * - a commit is announced (the primary's scheduler delivers it);
 * - connection slots (maxConnections, maxConnectionsPerIp across workers);
 * - the failed-login throttle's verdicts and tickets;
 * - POP3 maildrop locks.
 *
 * Each question is one message each way. When the channel closes (the
 * primary is gone) every question still waiting is refused, so no
 * connection waits for an answer that cannot come.
 */
import type { Metrics } from '../services/metrics.js';
import type { ThrottleVerdict } from '../services/login-throttle.js';
import type { SharedSlot, SharedSlots } from '../session/ip-connections.js';
import type { SharedMailboxLocks } from '../pop3/mailbox-lock.js';
import { isPrimaryMessage, type ListenerAddress, type LoginEnd, type PrimaryMessage, type WorkerMessage } from './messages.js';

type Answer = Extract<PrimaryMessage, { n: number }>;

export interface WorkerHandlers {
  /** SIGHUP reached the primary; resolves true when the new config runs. */
  reload(): Promise<boolean>;
  /** SIGTERM reached the primary: drain and exit. */
  stop(timeoutMs: number): void;
  /** The primary is gone: close at once (a new primary lists the spool when it starts). */
  orphaned(): void;
}

export class WorkerLink implements SharedSlots, SharedMailboxLocks {
  private next = 0;
  private readonly waiting = new Map<number, { resolve(m: Answer): void; reject(err: Error): void }>();
  private closed = false;
  private handlers: WorkerHandlers | undefined;
  private metrics: Metrics | undefined;

  constructor(private readonly channel: NodeJS.Process = process) {
    channel.on('message', (m: unknown) => {
      if (isPrimaryMessage(m)) this.receive(m);
    });
    channel.on('disconnect', () => {
      this.closed = true;
      for (const w of this.waiting.values()) w.reject(new Error('the primary process is gone'));
      this.waiting.clear();
      this.handlers?.orphaned();
    });
  }

  /** Where reload, stop and metrics requests go, once the worker's server runs. */
  serve(handlers: WorkerHandlers, metrics: Metrics): void {
    this.handlers = handlers;
    this.metrics = metrics;
    if (this.closed) handlers.orphaned();
  }

  ready(listeners: readonly ListenerAddress[]): void {
    this.send({ yubin: 'ready', listeners });
  }

  /** Called by the spool after each commit: the fsync and rename are done, the 250 follows. */
  committed(id: string): void {
    this.send({ yubin: 'commit', id });
  }

  async acquire(listener: string, ip: string): Promise<SharedSlot> {
    const n = ++this.next;
    const a = await this.ask({ yubin: 'slot', n, listener, ip });
    if (a.yubin !== 'slot') throw new Error(`unexpected answer ${a.yubin} to slot`);
    let released = false;
    return {
      rank: a.rank,
      total: a.total,
      release: () => {
        if (released) return;
        released = true;
        this.send({ yubin: 'unslot', n });
      },
    };
  }

  async login(ip: string, account: string): Promise<{ verdict: ThrottleVerdict; end(how: LoginEnd): void }> {
    const n = ++this.next;
    const a = await this.ask({ yubin: 'login', n, ip, account });
    if (a.yubin !== 'login') throw new Error(`unexpected answer ${a.yubin} to login`);
    let done = a.verdict.locked; // a refused attempt holds nothing in the primary
    return {
      verdict: a.verdict,
      end: (how) => {
        if (done) return;
        done = true;
        this.send({ yubin: 'login-end', n, how });
      },
    };
  }

  async lock(key: string): Promise<(() => void) | undefined> {
    const n = ++this.next;
    const a = await this.ask({ yubin: 'lock', n, key });
    if (a.yubin !== 'lock') throw new Error(`unexpected answer ${a.yubin} to lock`);
    if (!a.granted) return undefined;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.send({ yubin: 'unlock', n });
    };
  }

  private ask(m: Extract<WorkerMessage, { n: number }>): Promise<Answer> {
    if (this.closed) return Promise.reject(new Error('the primary process is gone'));
    return new Promise((resolve, reject) => {
      this.waiting.set(m.n, { resolve, reject });
      this.send(m);
    });
  }

  private send(m: WorkerMessage): void {
    if (this.closed || !this.channel.connected) return;
    // The callback keeps an EPIPE (primary just died) from becoming an 'error' event.
    this.channel.send!(m, undefined, undefined, () => undefined);
  }

  private receive(m: PrimaryMessage): void {
    switch (m.yubin) {
      case 'slot':
      case 'login':
      case 'lock': {
        const w = this.waiting.get(m.n);
        this.waiting.delete(m.n);
        w?.resolve(m);
        return;
      }
      case 'metrics?':
        void (this.metrics?.registry.getMetricsAsJSON() ?? Promise.resolve([])).then((metrics) => this.send({ yubin: 'metrics', n: m.n, metrics }));
        return;
      case 'reload':
        void (this.handlers?.reload() ?? Promise.resolve(false)).then((ok) => this.send({ yubin: 'reloaded', n: m.n, ok }));
        return;
      case 'stop':
        this.handlers?.stop(m.timeoutMs);
        return;
    }
  }
}
