/**
 * Services shared by the core and plugins, resolved through tsyringe so a test
 * (or a cluster) can swap one without the plugin changing.
 */
import 'reflect-metadata';
import { container as rootContainer, type DependencyContainer, type InjectionToken } from 'tsyringe';
import type { Logger } from 'pino';
import { SystemClock, type Clock } from './clock.js';
import { LocalDomains } from './local-domains.js';
import { NodeDns, type Dns } from './dns.js';
import { CachingDns, TtlNodeDns } from './dns-cache.js';
import { DEFAULT_LOGIN_THROTTLE, LoginThrottle, type LoginThrottleConfig } from './login-throttle.js';
import type { DnsConfig, StoreConfig } from '../config/schema.js';
import type { KeyValueStore } from './store.js';
import { createStore } from './store-backends.js';
import { Metrics } from './metrics.js';

export { ManualClock, SystemClock, type Clock } from './clock.js';
export { LocalDomains, normalizeDomain, type LocalDomainSource } from './local-domains.js';
export { ABORTED, forwardConfirm, isAborted, NodeDns, type Dns, type Fcrdns, type Lookup, type MxRecord } from './dns.js';
export { CachingDns, TtlNodeDns, type DnsCacheConfig, type TimedLookup, type TtlDns } from './dns-cache.js';
export { lookupDnsbl, lookupRhsbl, reverseIp, type DnsblOptions, type DnsblResult } from './dnsbl.js';
export { MemoryStore, type KeyValueStore } from './store.js';
export { DEFAULT_LOGIN_THROTTLE, LoginThrottle, loginTurn, type LoginThrottleConfig, type LoginTicket, type ThrottledBy, type ThrottleVerdict } from './login-throttle.js';

export const Tokens = {
  Clock: Symbol.for('yubin.Clock') as InjectionToken<Clock>,
  Logger: Symbol.for('yubin.Logger') as InjectionToken<Logger>,
  LocalDomains: Symbol.for('yubin.LocalDomains') as InjectionToken<LocalDomains>,
  Dns: Symbol.for('yubin.Dns') as InjectionToken<Dns>,
  LoginThrottle: Symbol.for('yubin.LoginThrottle') as InjectionToken<LoginThrottle>,
  Store: Symbol.for('yubin.Store') as InjectionToken<KeyValueStore>,
  /** The server's Prometheus registry and the counters the core moves. */
  Metrics: Symbol.for('yubin.Metrics') as InjectionToken<Metrics>,
} as const;

/** The store, opened at most once, closed with the server. */
class StoreHolder {
  private store: KeyValueStore | undefined;
  constructor(private readonly create: () => KeyValueStore) {}
  open(): KeyValueStore {
    return (this.store ??= this.create());
  }
  async close(): Promise<void> {
    const s = this.store;
    this.store = undefined;
    await s?.close();
  }
}
const STORE_HOLDER = Symbol.for('yubin.StoreHolder') as InjectionToken<StoreHolder>;

/** Closes what the container opened on demand (the store); safe to call twice. */
export async function closeServices(c: DependencyContainer): Promise<void> {
  if (c.isRegistered(STORE_HOLDER)) await c.resolve(STORE_HOLDER).close();
}

/** What plugins get: the common services by name, and the container for the rest. */
export interface Services {
  readonly clock: Clock;
  readonly localDomains: LocalDomains;
  readonly dns: Dns;
  /** Failed-login counts shared by SMTP AUTH and POP3. */
  readonly loginThrottle: LoginThrottle;
  /** State kept between connections (greylisting, counters); opened on first use. */
  readonly store: KeyValueStore;
  resolve<T>(token: InjectionToken<T>): T;
}

/** A child container per server instance, so several servers can share one process (tests do). */
export function createServiceContainer(
  logger: Logger,
  localDomains: Iterable<string>,
  dns: Pick<DnsConfig, 'servers' | 'timeout' | 'tries' | 'cacheSize' | 'minTtl' | 'maxTtl' | 'negativeTtl'>,
  configure?: (c: DependencyContainer) => void,
  loginThrottle: LoginThrottleConfig = DEFAULT_LOGIN_THROTTLE,
  store?: { readonly config: StoreConfig; readonly dataDir: string },
): DependencyContainer {
  const c = rootContainer.createChildContainer();
  c.register(Tokens.Logger, { useValue: logger });
  c.register(Tokens.Clock, { useValue: new SystemClock() });
  c.register(Tokens.LocalDomains, { useValue: new LocalDomains(localDomains) });
  // Answers cached per server (TTL-respecting, LRU), timed by whichever clock configure puts in.
  let clock: Clock | undefined;
  const now = () => (clock ??= c.resolve(Tokens.Clock)).now();
  c.register(Tokens.Dns, { useValue: dns.cacheSize > 0 ? new CachingDns(new TtlNodeDns(dns), dns, now) : new NodeDns(dns) });
  configure?.(c);
  // After configure: the throttle keeps time by whichever clock the test put in.
  if (!c.isRegistered(Tokens.LoginThrottle)) c.register(Tokens.LoginThrottle, { useValue: new LoginThrottle(loginThrottle, c.resolve(Tokens.Clock)) });
  if (!c.isRegistered(Tokens.Metrics)) {
    // Made when first asked for (the server asks; check-config never does). The DNS cache and the throttle are read at scrape time.
    let metrics: Metrics | undefined;
    c.register(Tokens.Metrics, { useFactory: () => (metrics ??= new Metrics({ dns: () => c.resolve(Tokens.Dns), loginThrottle: () => c.resolve(Tokens.LoginThrottle) })) });
  }
  if (!c.isRegistered(Tokens.Store)) {
    // Opened when a plugin first asks: commands that never need it (check-config) open no database or Redis connection.
    const settings = store ?? { config: { backend: 'memory' as const, file: 'state.sqlite', prefix: 'yubin:' }, dataDir: '.' };
    const holder = new StoreHolder(() => createStore(settings.config, settings.dataDir, c.resolve(Tokens.Clock)));
    c.register(STORE_HOLDER, { useValue: holder });
    c.register(Tokens.Store, { useFactory: () => holder.open() });
  }
  return c;
}

export function servicesFrom(c: DependencyContainer): Services {
  return {
    clock: c.resolve(Tokens.Clock),
    localDomains: c.resolve(Tokens.LocalDomains),
    dns: c.resolve(Tokens.Dns),
    loginThrottle: c.resolve(Tokens.LoginThrottle),
    get store() {
      return c.resolve(Tokens.Store);
    },
    resolve: <T>(token: InjectionToken<T>) => c.resolve(token),
  };
}
