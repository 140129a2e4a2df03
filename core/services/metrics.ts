/**
 * The server's Prometheus metrics: one prom-client registry per server
 * instance (never the global one, so several servers in one process, as in
 * tests, keep their own counts), every name prefixed `yubin_`.
 *
 * Cost on the SMTP path: a counter the sessions move is a plain number in a
 * cell bound once (per listener, or per hook/plugin/action the first time it
 * is seen); prom-client hears of the cells only when it is scraped. That is a
 * field increment where prom-client's own labelled `inc` hashes and
 * validates its labels every time (~0.2 µs). Histograms are prom-client's,
 * each label set bound once (its pipeline, its listener). Queue depth, the
 * DNS cache and the login throttle are read at scrape time from the objects
 * that keep them: nothing is counted twice.
 */
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';

/** How a connection ended before or at its greeting. */
export type ConnectionOutcome = 'accepted' | 'refused' | 'too-many' | 'tls-failed' | 'proxy-failed';
/** proxy-failed: on a listener behind a proxy, a peer that is not a trusted proxy, or a bad or missing PROXY header. */
export const CONNECTION_OUTCOMES: readonly ConnectionOutcome[] = ['accepted', 'refused', 'too-many', 'tls-failed', 'proxy-failed'];

export type DeliveryChannel = 'local' | 'remote';
export type DeliveryResult = 'success' | 'deferral' | 'failure';

/** The queue as the scheduler sees it at scrape time. */
export interface QueueDepth {
  /** Messages: due and waiting for their turn, waiting for a retry time, held (concurrency 0), being worked on. */
  readonly messages: { readonly ready: number; readonly deferred: number; readonly held: number; readonly active: number };
  /** Delivery jobs of the messages being worked on, per channel: waiting for a concurrency slot, or running. */
  readonly deliveries: Readonly<Record<DeliveryChannel, { readonly waiting: number; readonly running: number }>>;
}

/** What the DNS cache counts (CachingDns). */
export interface DnsCacheStats {
  readonly hits: number;
  readonly misses: number;
  readonly size: number;
}

/** What the failed-login throttle counts (LoginThrottle.stats). */
export interface LoginThrottleStats {
  /** Lockouts begun, by the count that reached lockoutAfter. */
  readonly lockouts: Readonly<Record<string, number>>;
  /** Attempts refused without a password check during a lockout, by the count that caused it. */
  readonly refused: Readonly<Record<string, number>>;
}

/** A counter's value for one label set: what the hot path adds to. */
interface Cell {
  n: number;
  readonly labels: Record<string, string>;
}

/**
 * A prom-client counter whose label sets are cells: plain numbers added to
 * without a hash or a check, copied into the counter when it is scraped.
 */
class CellCounter {
  private readonly cells = new Map<string, Cell>();

  constructor(
    registry: Registry,
    name: string,
    help: string,
    private readonly labelNames: readonly string[],
  ) {
    const cells = this.cells;
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const c of cells.values()) this.inc(c.labels, c.n);
      },
    });
  }

  /** The cell for these label values (in labelNames' order), made the first time. */
  cell(...values: string[]): Cell {
    const key = values.length === 1 ? values[0]! : values.join('\0');
    let c = this.cells.get(key);
    if (!c) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((name, i) => (labels[name] = values[i] ?? ''));
      c = { n: 0, labels };
      this.cells.set(key, c);
    }
    return c;
  }
}

/** One listener's counters, bound once; a session adds to them. */
export class ListenerMetrics {
  private readonly connections: Record<ConnectionOutcome, Cell>;
  /** SMTP only: made with the listener for smtp, never for pop3. */
  private messages: { accepted: Cell; refused: Cell } | undefined;
  private recipients: { accepted: Cell; refused: Cell } | undefined;

  constructor(
    private readonly listener: string,
    connections: CellCounter,
    private readonly counters: { readonly messages: CellCounter; readonly recipients: CellCounter },
    smtp: boolean,
  ) {
    this.connections = Object.fromEntries(CONNECTION_OUTCOMES.map((o) => [o, connections.cell(listener, o)])) as Record<ConnectionOutcome, Cell>;
    if (smtp) this.bindSmtp();
  }

  private bindSmtp(): void {
    const { messages, recipients } = this.counters;
    this.messages = { accepted: messages.cell(this.listener, 'accepted'), refused: messages.cell(this.listener, 'refused') };
    this.recipients = { accepted: recipients.cell(this.listener, 'accepted'), refused: recipients.cell(this.listener, 'refused') };
  }

  connection(outcome: ConnectionOutcome): void {
    this.connections[outcome].n++;
  }

  /** A message answered after its final dot: 2xx (queued, or discarded) or not. */
  message(accepted: boolean): void {
    if (!this.messages) this.bindSmtp();
    (accepted ? this.messages!.accepted : this.messages!.refused).n++;
  }

  /** A RCPT answered 2xx or not. */
  recipient(accepted: boolean): void {
    if (!this.recipients) this.bindSmtp();
    (accepted ? this.recipients!.accepted : this.recipients!.refused).n++;
  }
}

/** Observes one hook's run of one plugin, in seconds. */
export type HookTimer = (seconds: number) => void;

const HOOK_BUCKETS = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30];
const ATTEMPT_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300];
/** From a few milliseconds (local mail) to the queue's lifetime (a week). */
const DELAY_BUCKETS = [0.01, 0.1, 1, 10, 60, 300, 900, 3600, 14_400, 86_400, 604_800];

export class Metrics {
  readonly registry = new Registry();
  private readonly connections: CellCounter;
  private readonly messages: CellCounter;
  private readonly recipients: CellCounter;
  private readonly decisions: CellCounter;
  private readonly deliveries: CellCounter;
  private readonly hookDuration: Histogram<'hook' | 'plugin'>;
  /** Bound per channel: [attempt duration, delay until delivered]. */
  private readonly deliveryTimers: Record<DeliveryChannel, [ReturnType<Histogram<'channel'>['labels']>, ReturnType<Histogram<'channel'>['labels']>]>;
  private readonly listeners = new Map<string, ListenerMetrics>();
  private queueDepth: (() => QueueDepth) | undefined;
  private workers: (() => Promise<Array<Array<MetricObjectWithValues<MetricValue<string>>>>>) | undefined;
  private processMetrics = false;

  /**
   * `dns` and `loginThrottle` are asked at scrape time (they are the
   * container's services, which a test may have replaced); a DNS service
   * that keeps no cache statistics reports nothing.
   */
  constructor(sources: { dns?: () => unknown; loginThrottle?: () => { stats?: LoginThrottleStats } } = {}) {
    const registry = this.registry;
    this.connections = new CellCounter(registry, 'yubin_connections_total', 'Connections by listener and outcome: accepted (greeted), refused (by a connect hook, or while stopping), too-many (maxConnections or maxConnectionsPerIp), tls-failed (implicit TLS handshake), proxy-failed (behind a proxy: an untrusted peer, a bad or missing PROXY header).', ['listener', 'outcome']);
    this.messages = new CellCounter(registry, 'yubin_messages_total', 'SMTP messages by listener and result: accepted (2xx after the final dot, discards included) or refused (4xx/5xx after the final dot).', ['listener', 'result']);
    this.recipients = new CellCounter(registry, 'yubin_recipients_total', 'SMTP RCPT commands by listener and result: accepted (2xx) or refused.', ['listener', 'result']);
    this.decisions = new CellCounter(registry, 'yubin_hook_decisions_total', 'Decisions as the log has them, by hook, deciding plugin (core for the core) and action.', ['hook', 'plugin', 'action']);
    this.deliveries = new CellCounter(registry, 'yubin_deliveries_total', 'Delivery attempts by channel and result: success, deferral (retried later) or failure (bounced).', ['channel', 'result']);
    this.hookDuration = new Histogram({ name: 'yubin_hook_duration_seconds', help: "Time one plugin took to answer one hook, by hook and plugin.", labelNames: ['hook', 'plugin'], buckets: HOOK_BUCKETS, registers: [registry] });
    const attempt = new Histogram({ name: 'yubin_delivery_attempt_duration_seconds', help: 'Time from the start of a delivery attempt to its outcome, per recipient, by channel.', labelNames: ['channel'], buckets: ATTEMPT_BUCKETS, registers: [registry] });
    const delay = new Histogram({ name: 'yubin_delivery_delay_seconds', help: 'Time from acceptance to successful delivery, per recipient, by channel.', labelNames: ['channel'], buckets: DELAY_BUCKETS, registers: [registry] });
    for (const channel of ['local', 'remote']) for (const result of ['success', 'deferral', 'failure']) this.deliveries.cell(channel, result);
    this.deliveryTimers = { local: [attempt.labels('local'), delay.labels('local')], remote: [attempt.labels('remote'), delay.labels('remote')] };

    const metrics = this;
    new Gauge({
      name: 'yubin_queue_messages',
      help: 'Messages in the queue by state: ready (due, waiting for its turn), deferred (waiting for a retry time), held (its channel has concurrency 0), active (being delivered).',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const depth = metrics.queueDepth?.();
        if (!depth) return;
        for (const [state, n] of Object.entries(depth.messages)) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'yubin_queue_deliveries',
      help: "Delivery jobs of the messages being worked on (a local recipient, or one message's recipients at one remote domain), by channel and state: waiting for a concurrency slot, or running.",
      labelNames: ['channel', 'state'],
      registers: [registry],
      collect() {
        const depth = metrics.queueDepth?.();
        if (!depth) return;
        for (const [channel, d] of Object.entries(depth.deliveries)) {
          this.set({ channel, state: 'waiting' }, d.waiting);
          this.set({ channel, state: 'running' }, d.running);
        }
      },
    });

    const dnsStats = (): DnsCacheStats | undefined => {
      const dns = sources.dns?.() as Partial<{ cacheStats(): DnsCacheStats }> | undefined;
      return typeof dns?.cacheStats === 'function' ? dns.cacheStats() : undefined;
    };
    new Counter({
      name: 'yubin_dns_cache_hits_total',
      help: 'DNS questions answered by the cache (or by an identical query already in flight).',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(dnsStats()?.hits ?? 0);
      },
    });
    new Counter({
      name: 'yubin_dns_cache_misses_total',
      help: 'DNS questions the cache sent to the resolver.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(dnsStats()?.misses ?? 0);
      },
    });
    new Gauge({
      name: 'yubin_dns_cache_entries',
      help: 'Answers the DNS cache keeps (expired ones until they are looked at or evicted).',
      registers: [registry],
      collect() {
        this.set(dnsStats()?.size ?? 0);
      },
    });

    const throttleCounter = (name: string, help: string, pick: (s: LoginThrottleStats) => Readonly<Record<string, number>>) =>
      new Counter({
        name,
        help,
        labelNames: ['by'],
        registers: [registry],
        collect() {
          this.reset();
          const stats = sources.loginThrottle?.().stats;
          if (stats) for (const [by, n] of Object.entries(pick(stats))) this.inc({ by }, n);
        },
      });
    throttleCounter('yubin_login_lockouts_total', 'Failed-login lockouts begun (SMTP AUTH and POP3), by the count that reached lockoutAfter: ip, account or ip+account.', (s) => s.lockouts);
    throttleCounter('yubin_login_locked_refusals_total', 'Logins refused without a password check during a lockout, by the count that caused it.', (s) => s.refused);
  }

  /**
   * The listener's counters, made the first time (a reload keeps them). The
   * server names the protocol when the listener starts, so an smtp listener's
   * message and recipient counters are there (at 0) before any mail.
   */
  listener(name: string, protocol?: 'smtp' | 'pop3'): ListenerMetrics {
    let m = this.listeners.get(name);
    if (!m) {
      m = new ListenerMetrics(name, this.connections, { messages: this.messages, recipients: this.recipients }, protocol === 'smtp');
      this.listeners.set(name, m);
    }
    return m;
  }

  /** One decision line of the log: a hook answered by a plugin (or the core). */
  decision(hook: string, plugin: string, action: string): void {
    this.decisions.cell(hook, plugin, action).n++;
  }

  /** A timer for one (hook, plugin), bound once by the pipeline that runs it. */
  hookTimer(hook: string, plugin: string): HookTimer {
    const child = this.hookDuration.labels(hook, plugin);
    return (seconds) => child.observe(seconds);
  }

  /** One recipient's delivery attempt: its result, how long the attempt took and, when delivered, how long since acceptance. */
  delivery(channel: DeliveryChannel, result: DeliveryResult, attemptSeconds: number, delaySeconds: number | undefined): void {
    this.deliveries.cell(channel, result).n++;
    const [attempt, delay] = this.deliveryTimers[channel];
    attempt.observe(attemptSeconds);
    if (delaySeconds !== undefined) delay.observe(Math.max(0, delaySeconds));
  }

  /** Where the queue gauges are read from at scrape time (the scheduler). */
  watchQueue(depth: () => QueueDepth): void {
    this.queueDepth = depth;
  }

  /**
   * Adds prom-client's process and Node.js figures (CPU, memory, file
   * descriptors, event loop lag, GC) to this registry, once. Called when an
   * HTTP listener first starts: the event loop and GC observers it sets up
   * cannot be taken down again, so a server nobody can scrape has none.
   */
  enableProcessMetrics(): void {
    if (this.processMetrics) return;
    this.processMetrics = true;
    collectDefaultMetrics({ register: this.registry, prefix: 'yubin_' });
    // Gauges named like counters (promtool's lint refuses them); each is the sum of its
    // unsuffixed twin over its `type` label (yubin_nodejs_active_handles{type}), so nothing is lost.
    for (const name of ['active_handles_total', 'active_requests_total', 'active_resources_total']) this.registry.removeSingleMetric(`yubin_nodejs_${name}`);
  }

  /**
   * In a cluster's primary: where the workers' metrics are asked for at
   * scrape time. The listeners' counters live in the workers; a scrape sums
   * each series over the primary and every worker (prom-client's cluster
   * aggregation: counters and histograms summed, process gauges as
   * prom-client aggregates them).
   */
  gatherWorkers(gather: () => Promise<Array<Array<MetricObjectWithValues<MetricValue<string>>>>>): void {
    this.workers = gather;
  }

  /** The exposition text and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    if (!this.workers) return { contentType: this.registry.contentType, body: await this.registry.metrics() };
    const [own, others] = await Promise.all([this.registry.getMetricsAsJSON(), this.workers()]);
    const sum = AggregatorRegistry.aggregate([own, ...others]);
    return { contentType: sum.contentType, body: await sum.metrics() };
  }
}
