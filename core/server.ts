/**
 * The running server: config, services, plugins and listeners, with reload
 * (SIGHUP) and drain (SIGTERM). Several listeners, each with its own ordered
 * plugin list. With `workers: 1` one process does everything; with more, this
 * class plays one part of a cluster (core/cluster/): the primary (queue,
 * control socket, http listeners) or a worker (smtp and pop3 listeners).
 */
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { DependencyContainer } from 'tsyringe';
import type { Logger } from 'pino';
import { loadConfig, type LoadedConfig } from './config/load.js';
import type { AnyListenerConfig, HttpListenerConfig, ListenerConfig } from './config/schema.js';
import { Pipeline, type PipelinePlugin } from './pipeline.js';
import { closePlugins, httpServices, startPlugins, type ActivePlugin, type StartedPlugins } from './plugin-loader.js';
import type { PluginDefinition } from './plugin.js';
import { closeServices, createServiceContainer, servicesFrom, Tokens, type Services } from './services/index.js';
import type { Metrics } from './services/metrics.js';
import type { ListenerAddress } from './cluster/messages.js';
import { HttpListener, HttpServiceError, serviceConfigError, type HttpRuntime } from './http/listener.js';
import { Spool } from './queue/spool.js';
import { SpoolSpace } from './queue/space.js';
import { Scheduler, type DeliveryRuntime } from './queue/scheduler.js';
import { ControlServer } from './queue/control.js';
import { isOwnAddress } from './ip.js';
import { SmtpListener } from './smtp/listener.js';
import { Pop3Listener } from './pop3/listener.js';
import type { ListenerRuntime, SessionEnv } from './session/runtime.js';
import type { ListenerTls } from './session/tls.js';
import { listenOptions, type ListenOptions } from './session/listen.js';
import { loadKeyPair, selfSignedKeyPair, tlsPolicy } from './tls.js';
import { ClusterPrimary } from './cluster/primary.js';
import type { WorkerLink } from './cluster/worker.js';
import { WorkerLoginThrottle } from './cluster/worker-throttle.js';
import { shareMailboxLocks } from './pop3/mailbox-lock.js';
import { SharedLoginThrottle } from './services/shared-login-throttle.js';
import { SharedConnections } from './session/shared-connections.js';
import { canRunScripts, type ScriptStore } from './services/store.js';

export interface StartOptions {
  readonly log: Logger;
  /** Registers replacement services (a test's clock or DNS resolver) before anything starts. */
  readonly configure?: (container: DependencyContainer) => void;
  /** Plugins given as objects rather than module names, keyed as the listeners name them. */
  readonly inlinePlugins?: ReadonlyMap<string, PluginDefinition<unknown>>;
  /** With `workers: N` (N > 1), the part this process plays; absent, the whole server runs here. */
  readonly cluster?: ClusterPart;
}

/**
 * The primary forks `workers` workers and keeps the queue, the control socket
 * and the http listeners; a worker runs the smtp and pop3 listeners and asks
 * the primary, over `link`, for what all workers share.
 */
export type ClusterPart = { readonly role: 'primary'; readonly workers: number } | { readonly role: 'worker'; readonly link: WorkerLink };

/** Plugins of one config load; closed once no connection uses them any more. */
class Generation {
  private users = 0;
  private retired = false;
  private deliveryPipeline: Pipeline | undefined;
  constructor(
    readonly plugins: StartedPlugins,
    private readonly log: Logger,
  ) {}
  /** The deliver-hook plugins of this config, in the order `delivery.plugins` lists them. */
  delivery(loaded: LoadedConfig, log: Logger, metrics: Metrics): Pipeline {
    this.deliveryPipeline ??= new Pipeline(this.plugins.delivery.map(pipelinePlugin), loaded.config.hookTimeout, log, metrics);
    return this.deliveryPipeline;
  }
  acquire(): void {
    this.users++;
  }
  release(): void {
    this.users--;
    this.maybeClose();
  }
  retire(): void {
    this.retired = true;
    this.maybeClose();
  }
  private maybeClose(): void {
    if (this.retired && this.users === 0) void closePlugins(this.plugins.instances, this.log);
  }
}

/** What the server needs of an smtp or pop3 listener. */
interface MailListener {
  runtime: ListenerRuntime;
  readonly name: string;
  listen(options?: ListenOptions): Promise<AddressInfo>;
  address(): AddressInfo;
  applyLimits(): void;
  drain(timeoutMs: number): Promise<void>;
  openConnections(): number;
}

export interface ServerOverview {
  readonly pid: number;
  readonly started: number;
  /** connections and limit for smtp and pop3 listeners; an http listener has neither. */
  readonly listeners: ReadonlyArray<{ readonly name: string; readonly protocol: string; readonly address: string; readonly connections?: number; readonly limit?: number }>;
  readonly deliveries: Record<'local' | 'remote', { readonly running: number; readonly limit: number }>;
  readonly queue: { readonly waiting: number; readonly active: number; readonly held: number };
  /** Worker processes running the smtp and pop3 listeners; absent with `workers: 1`. */
  readonly workers?: number;
}

type Listener = MailListener | HttpListener;

/** The config a listener runs with. */
function configOf(l: Listener): AnyListenerConfig {
  return l instanceof HttpListener ? l.config : l.runtime.config;
}

export class YubinServer {
  private readonly listeners = new Map<string, Listener>();
  private readonly started = Date.now();
  private generation!: Generation;
  private reloading: Promise<void> | undefined;
  /** Absent in a cluster worker: the primary's scheduler delivers. */
  private scheduler: Scheduler | undefined;
  private control: ControlServer | undefined;
  /** In a cluster's primary: the workers. */
  private primary: ClusterPrimary | undefined;
  /** connectionCounts.shared: this node's connections counted in Redis with every other node's. */
  private sharedConnections: SharedConnections | undefined;

  private constructor(
    private loaded: LoadedConfig,
    private readonly options: StartOptions,
    private readonly container: DependencyContainer,
    readonly services: Services,
    private readonly env: SessionEnv,
  ) {}

  static async start(loaded: LoadedConfig, options: StartOptions): Promise<YubinServer> {
    const { config } = loaded;
    const log = options.log;
    const part = options.cluster;
    const link = part?.role === 'worker' ? part.link : undefined;
    // A worker's throttle asks the primary's, which holds the counts for every worker;
    // with loginThrottle.shared, the primary's (or the lone process's) keeps them in Redis, for every node.
    const configure = (c: DependencyContainer) => {
      options.configure?.(c);
      if (link) c.register(Tokens.LoginThrottle, { useValue: new WorkerLoginThrottle(config.loginThrottle, c.resolve(Tokens.Clock), link) });
      else if (config.loginThrottle.shared && !c.isRegistered(Tokens.LoginThrottle)) {
        const store = () => scriptStore(c, 'loginThrottle.shared');
        c.register(Tokens.LoginThrottle, { useValue: new SharedLoginThrottle(config.loginThrottle, c.resolve(Tokens.Clock), store, log.child({ component: 'login-throttle' })) });
      }
    };
    const container = createServiceContainer(log, config.localDomains, config.dns, configure, config.loginThrottle, { config: config.store, dataDir: config.dataDir });
    // Connection counts for every node (connectionCounts.shared): asked by this process's listeners, or by the primary for its workers.
    const sharedConnections =
      !link && config.connectionCounts.shared
        ? new SharedConnections(() => scriptStore(container, 'connectionCounts.shared'), { nodeTimeout: config.connectionCounts.nodeTimeout, log: log.child({ component: 'connections' }) })
        : undefined;
    const services = servicesFrom(container);
    const spool = new Spool(path.join(config.dataDir, 'queue'));
    // Only the process that owns the queue cleans it: a worker restarting must not remove another's files in progress.
    await spool.init(!link);
    const spoolSpace = new SpoolSpace(spool.dir, config.queue.minFreeSpace, log.child({ component: 'queue' }));
    if (config.queue.minFreeSpace > 0) await spoolSpace.refresh();
    const metrics = container.resolve(Tokens.Metrics);
    const ownSlots = part?.role === 'primary' ? undefined : sharedConnections;
    const sharedSlots = link ?? ownSlots;
    const env: SessionEnv = { hostname: config.hostname, spool, spoolSpace, services, log, metrics, ...(sharedSlots ? { sharedSlots } : {}) };
    const server = new YubinServer(loaded, options, container, services, env);
    server.sharedConnections = sharedConnections;
    sharedConnections?.start();
    server.generation = new Generation(await startPlugins(loaded, { services, log }, options.inlinePlugins), log);
    if (link) {
      shareMailboxLocks(link);
      // The 250 follows the commit; the announcement goes first, and a worker that dies before it is made good by the primary's listing.
      spool.onCommit = (id) => link.committed(id);
      try {
        for (const lc of config.listeners) if (server.serves(lc)) await server.startListener(lc);
      } catch (err) {
        await server.close();
        throw err;
      }
      link.ready(server.mailAddresses());
      return server;
    }
    if (part?.role === 'primary' && config.store.backend === 'memory') log.warn({ event: 'workers', store: 'memory' }, "store backend memory is per process: each worker keeps its own greylisting and counters; use sqlite or redis with workers");
    const scheduler = new Scheduler({
      spool,
      clock: services.clock,
      log: log.child({ component: 'queue' }),
      dns: services.dns,
      localDomains: services.localDomains,
      hostname: config.hostname,
      queue: () => server.loaded.config.queue,
      delivery: () => server.loaded.config.delivery,
      runtime: () => server.deliveryRuntime(),
      isOwnSocket: (ip, port) => server.isOwnSocket(ip, port),
      metrics,
      tlsReportDir: path.join(config.dataDir, 'tlsrpt'),
    });
    server.scheduler = scheduler;
    metrics.watchQueue(() => scheduler.depth());
    // Commits are taken from the first one on; the spool is listed only once
    // the control socket is up, so a message committed at any point of
    // start-up is either listed or announced. Workers announce theirs over IPC,
    // from the moment they are forked.
    scheduler.attach();
    try {
      for (const lc of config.listeners) if (server.serves(lc)) await server.startListener(lc);
      if (part?.role === 'primary') {
        server.primary = await ClusterPrimary.start({
          workers: part.workers,
          log,
          throttle: () => services.loginThrottle,
          ...(sharedConnections ? { slots: sharedConnections } : {}),
          commit: (id) => scheduler.add(id),
          workerLost: () => scheduler.recover(),
        });
        const primary = server.primary;
        metrics.gatherWorkers(() => primary.workerMetrics());
      }
      server.control = await ControlServer.listen(config.dataDir, scheduler, log, () => server.overview());
      await scheduler.start();
    } catch (err) {
      await server.close();
      throw err;
    }
    return server;
  }

  /** What `yubin status` shows of the running server (the primary's view, in a cluster). */
  overview(): ServerOverview {
    const text = (a: { address: string; port: number; family: string }) => (a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);
    const own = [...this.listeners.values()].map((l) => {
      const address = text(l.address());
      if (l instanceof HttpListener) return { name: l.name, protocol: 'http', address };
      return { name: l.name, protocol: l.runtime.config.protocol, address, connections: l.openConnections(), limit: l.runtime.config.limits.maxConnections };
    });
    const primary = this.primary;
    // The workers' listeners, with the connections the primary counts for all of them.
    const workers = (primary?.listeners() ?? []).map((l) => {
      const lc = this.loaded.config.listeners.find((c) => c.name === l.name);
      return { name: l.name, protocol: l.protocol, address: text(l), connections: primary!.connections(l.name), ...(lc && lc.protocol !== 'http' ? { limit: lc.limits.maxConnections } : {}) };
    });
    const order = this.loaded.config.listeners.map((l) => l.name);
    const listeners = [...own, ...workers].sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
    return {
      pid: process.pid,
      started: this.started,
      listeners,
      deliveries: this.scheduler!.deliveries(),
      queue: this.scheduler!.counts(),
      ...(primary ? { workers: primary.running() } : {}),
    };
  }

  /** Whether this process runs this listener: all of them alone; in a cluster, http in the primary and smtp/pop3 in the workers. */
  private serves(lc: AnyListenerConfig): boolean {
    const role = this.options.cluster?.role;
    if (!role) return true;
    return role === 'primary' ? lc.protocol === 'http' : lc.protocol !== 'http';
  }

  /** The smtp and pop3 listeners' bound addresses, for a worker's report to the primary. */
  private mailAddresses(): ListenerAddress[] {
    const out: ListenerAddress[] = [];
    for (const l of this.listeners.values()) {
      if (l instanceof HttpListener) continue;
      const a = l.address();
      out.push({ name: l.name, protocol: l.runtime.config.protocol, address: a.address, port: a.port, family: a.family });
    }
    return out;
  }

  get spool(): Spool {
    return this.env.spool;
  }

  /** The delivery side: flush, delete, bounce, and `idle()` for tests and benchmarks. */
  get queue(): Scheduler {
    if (!this.scheduler) throw new Error('a cluster worker has no queue: the primary delivers');
    return this.scheduler;
  }

  get metrics(): Metrics {
    return this.env.metrics;
  }

  private deliveryRuntime(): DeliveryRuntime {
    const generation = this.generation;
    return { pipeline: generation.delivery(this.loaded, this.options.log, this.env.metrics), lease: generation };
  }

  /** An address and port one of our SMTP listeners answers on: sending there would loop. */
  private isOwnSocket(ip: string, port: number): boolean {
    const smtp = [...this.listeners.values()].filter((l) => configOf(l).protocol === 'smtp').map((l) => l.address());
    // In a cluster the smtp listeners are the workers'.
    for (const l of this.primary?.listeners() ?? []) if (l.protocol === 'smtp') smtp.push(l);
    for (const a of smtp) {
      if (a.port !== port) continue;
      if (a.address === ip || ((a.address === '0.0.0.0' || a.address === '::') && isOwnAddress(ip))) return true;
    }
    return false;
  }

  /** Bound address of each listener (the real port when the config said 0). */
  addresses(): Record<string, AddressInfo> {
    return Object.fromEntries([...this.listeners].map(([name, l]) => [name, l.address()]));
  }

  /**
   * SIGHUP: reads the config and the files plugins use again. New connections get
   * the new plugins and limits; connections in progress finish with what they
   * started with. A listener whose address or TLS changed is replaced. A config
   * that does not validate is reported and the running one kept.
   */
  async reload(): Promise<boolean> {
    while (this.reloading) await this.reloading;
    let done!: () => void;
    this.reloading = new Promise<void>((r) => (done = r));
    const log = this.options.log;
    try {
      const loaded = await loadConfig(this.loaded.file);
      const plugins = await startPlugins(loaded, { services: this.services, log }, this.options.inlinePlugins);
      const generation = new Generation(plugins, log);
      const wanted = new Map(loaded.config.listeners.map((l) => [l.name, l]));
      // The http listeners that keep their socket get their new apps first: a service that refuses fails the reload with nothing changed.
      const httpApps: Array<{ commit(): void; cancel(): void }> = [];
      try {
        for (const [name, listener] of this.listeners) {
          const next = wanted.get(name);
          if (listener instanceof HttpListener && next?.protocol === 'http' && sameSocket(listener.config, next)) httpApps.push(await listener.prepare(httpRuntime(next, generation)));
        }
      } catch (err) {
        for (const a of httpApps) a.cancel();
        generation.retire();
        throw err;
      }
      const old = this.generation;
      const before = this.loaded.config;
      for (const key of ['hostname', 'dataDir', 'workers'] as const) {
        if (before[key] !== loaded.config[key]) log.warn({ event: 'reload', key }, `${key} changed: it takes effect at the next start, not on reload`);
      }
      for (const key of ['loginThrottle', 'connectionCounts'] as const) {
        if (before[key].shared !== loaded.config[key].shared) log.warn({ event: 'reload', key: `${key}.shared` }, `${key}.shared changed: it takes effect at the next start, not on reload`);
      }
      this.loaded = loaded;
      this.generation = generation;
      for (const a of httpApps) a.commit();
      for (const [name, listener] of this.listeners) {
        const next = wanted.get(name);
        if (next && sameSocket(configOf(listener), next)) {
          if (!(listener instanceof HttpListener)) {
            listener.runtime = this.runtime(next as ListenerConfig);
            listener.applyLimits();
          }
        } else {
          this.listeners.delete(name);
          void listener.drain(loaded.config.shutdownTimeout);
        }
      }
      for (const lc of loaded.config.listeners) if (this.serves(lc) && !this.listeners.has(lc.name)) await this.startListener(lc);
      const domains = this.services.localDomains;
      for (const d of before.localDomains) if (!loaded.config.localDomains.includes(d)) domains.delete(d);
      for (const d of loaded.config.localDomains) domains.add(d);
      this.services.loginThrottle.configure(loaded.config.loginThrottle);
      this.env.spoolSpace.configure(loaded.config.queue.minFreeSpace);
      old.retire();
      this.scheduler?.reconsider();
      // A listener added or moved by the reload: the primary's status and loop check see it.
      const link = this.options.cluster?.role === 'worker' ? this.options.cluster.link : undefined;
      link?.ready(this.mailAddresses());
      log.info({ event: 'reload', file: loaded.file }, 'configuration reloaded');
      if (this.primary && !(await this.primary.reload())) log.error({ event: 'reload' }, 'a worker did not take the new configuration (its own log says why)');
      return true;
    } catch (err) {
      log.error({ event: 'reload', err: (err as Error).message }, 'reload failed, keeping the running configuration');
      return false;
    } finally {
      this.reloading = undefined;
      done();
    }
  }

  /** SIGTERM: stop accepting, let transactions in progress finish, then close. */
  async stop(timeoutMs = this.loaded.config.shutdownTimeout): Promise<void> {
    // The workers drain first; the scheduler keeps taking what they commit meanwhile.
    await this.primary?.stop(timeoutMs);
    await Promise.all([...this.listeners.values()].map((l) => l.drain(timeoutMs)));
    this.listeners.clear();
    await this.scheduler?.stop(timeoutMs);
    await this.control?.close();
    this.control = undefined;
    this.generation.retire();
    await this.sharedConnections?.stop();
    await closeServices(this.container);
  }

  /** Closes everything at once. */
  async close(): Promise<void> {
    await this.primary?.stop(0);
    await Promise.all([...this.listeners.values()].map((l) => l.drain(0)));
    this.listeners.clear();
    // Deliveries in progress are bounded by their own timeouts; waiting keeps them from writing into a dataDir being removed.
    await this.scheduler?.stop(5_000);
    await this.control?.close();
    this.control = undefined;
    this.generation.retire();
    await this.sharedConnections?.stop();
    await closeServices(this.container);
  }

  private runtime(lc: ListenerConfig): ListenerRuntime {
    const generation = this.generation;
    const plugins = generation.plugins.listeners.get(lc.name)!.map(pipelinePlugin);
    const delivery = generation.delivery(this.loaded, this.options.log, this.env.metrics);
    return { name: lc.name, config: lc, pipeline: new Pipeline(plugins, this.loaded.config.hookTimeout, this.options.log, this.env.metrics), delivery, lease: generation };
  }

  private async startListener(lc: AnyListenerConfig): Promise<void> {
    const log = this.options.log;
    let keyPair: ListenerTls['keyPair'];
    if (lc.tls !== 'none') {
      if (lc.cert && lc.key) {
        keyPair = await loadKeyPair(this.loaded.resolvePath(lc.cert), this.loaded.resolvePath(lc.key)).catch((err: Error) => {
          throw new Error(`listener ${lc.name}: cannot read certificate or key: ${err.message}`);
        });
      } else {
        const pair = await selfSignedKeyPair(path.join(this.loaded.config.dataDir, 'tls'), this.loaded.config.hostname);
        if (pair.created) log.warn({ listener: lc.name, dir: path.join(this.loaded.config.dataDir, 'tls') }, 'generated a self-signed certificate; name a real one with cert and key');
        keyPair = pair;
      }
    }
    const tlsSettings: ListenerTls = { mode: lc.tls, keyPair, policy: tlsPolicy(lc.tlsProfile, lc.tlsCiphers) };
    const listener: Listener =
      lc.protocol === 'http'
        ? await HttpListener.create(httpRuntime(lc, this.generation), this.env.metrics, tlsSettings, log).catch((err: unknown) => {
            // A service that refuses its listener is a config problem: the same line check-config gives, exit 2.
            throw err instanceof HttpServiceError ? serviceConfigError(this.loaded, err) : err;
          })
        : lc.protocol === 'pop3'
          ? new Pop3Listener(this.runtime(lc), this.env, tlsSettings, log)
          : new SmtpListener(this.runtime(lc), this.env, tlsSettings, log);
    const address = await listener.listen(listenOptions(lc, this.loaded.config.listeners));
    this.listeners.set(lc.name, listener);
    // The counters of a listener exist (at 0) from its start, not from its first connection.
    if (lc.protocol !== 'http') this.env.metrics.listener(lc.name, lc.protocol);
    log.info(
      { event: 'listen', listener: lc.name, protocol: lc.protocol, address: address.address, port: address.port, tls: lc.tls, ...(lc.protocol === 'http' ? { serve: lc.serve } : { plugins: lc.plugins.map((p) => p.ref) }) },
      `listener ${lc.name} on ${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`,
    );
  }
}

/** The store, for state shared by several nodes: only Redis runs the scripts that keep it consistent. */
function scriptStore(c: DependencyContainer, option: string): ScriptStore {
  const store = c.resolve(Tokens.Store);
  if (!canRunScripts(store)) throw new Error(`${option} needs store.backend: redis`);
  return store;
}

function pipelinePlugin(p: ActivePlugin): PipelinePlugin {
  const { instance } = p;
  return { name: p.definition.name, hooks: instance.hooks, authMechanisms: instance.authMechanisms?.bind(instance), loginAccount: instance.loginAccount?.bind(instance) };
}

/** An http listener's part of a configuration: the plugins its `serve` names, held by their generation. */
function httpRuntime(lc: HttpListenerConfig, generation: Generation): HttpRuntime {
  return { config: lc, services: httpServices(generation.plugins, lc), lease: generation };
}

function sameSocket(a: AnyListenerConfig, b: AnyListenerConfig): boolean {
  return a.protocol === b.protocol && a.listen.host === b.listen.host && a.listen.port === b.listen.port && a.tls === b.tls && a.cert === b.cert && a.key === b.key && a.tlsProfile === b.tlsProfile && a.tlsCiphers === b.tlsCiphers;
}
