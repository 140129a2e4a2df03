/**
 * Connection counts across several nodes (`connectionCounts.shared`): each
 * node's open connections per listener and per client IP are kept in Redis,
 * so maxConnections and maxConnectionsPerIp (and tcprules' MAXCONNIP) hold
 * for the whole site as they hold for one node. A listener is the same
 * listener on every node when it has the same name.
 *
 * Layout (under the store's prefix):
 *
 *   conn:nodes                 sorted set: node id -> deadline (ms, Redis time)
 *   conn:n:<node>:<listener>   hash: client IP -> open connections, `*` -> all
 *
 * Why per-node hashes with a heartbeat, rather than one shared counter or a
 * sorted set entry per connection: a node that crashes cannot give its
 * connections back, and a shared counter would stay high forever. Here each
 * node owns its own hash, and the counts are summed over the nodes whose
 * deadline has not passed: a node that stops refreshing (crashed, cut off)
 * drops out of every sum after `nodeTimeout`, and its hash expires with it.
 * A sorted set per connection would need every open connection's score
 * refreshed (a POP3 session or a slow SMTP one lasts up to
 * maxConnectionTime); the heartbeat here is one write per listener.
 *
 * The node also counts its own connections in memory, which makes two
 * things simple: the heartbeat rewrites the node's hash from them (so a
 * release lost while Redis was down, or Redis restarted empty, is put right
 * within a heartbeat), and while Redis does not answer the node falls back
 * to them: the limits then hold per node (fail open to local counts; one log
 * line when that starts, one when Redis answers again). Refusing every
 * connection because the counter is away would take the site down with it.
 *
 * Cost: one round trip (a script) when a connection is accepted, one when it
 * closes, and one per listener every nodeTimeout / 3.
 */
import os from 'node:os';
import type { Logger } from 'pino';
import type { ScriptStore, StoreScript } from '../services/store.js';
import { StoreOutage } from '../services/store-outage.js';
import type { SharedSlot, SharedSlots } from './ip-connections.js';

export interface SharedConnectionsOptions {
  /** A node that has not refreshed its counts for this long is left out of every sum. */
  readonly nodeTimeout: number;
  readonly log: Logger;
}

const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/** Sums the hashes of the live nodes (dead ones are dropped first). Needs `now`, KEYS[1] = nodes, ARGV[1] = the hash key's start, ARGV[2] = listener. */
const SUM = `redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local rank, total = 0, 0
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('HMGET', ARGV[1] .. node .. ':' .. ARGV[2], ARGV[3], '*')
  rank = rank + (tonumber(v[1]) or 0)
  total = total + (tonumber(v[2]) or 0)
end`;

/**
 * KEYS: nodes, this node's hash. ARGV: hash key start (prefix .. 'conn:n:'), listener, ip, node, nodeTimeout.
 * Counts the connection, keeps the node alive; returns { rank, total } across live nodes.
 */
const ACQUIRE: StoreScript = {
  name: 'conn_acquire',
  keys: 2,
  lua: `${NOW}
local ttl = tonumber(ARGV[5])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[4])
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('HINCRBY', KEYS[2], '*', 1)
redis.call('PEXPIRE', KEYS[2], ttl)
${SUM}
return {rank, total}`,
};

/** KEYS: this node's hash. ARGV: ip. Never below zero: the heartbeat's rewrite is the truth. */
const RELEASE: StoreScript = {
  name: 'conn_release',
  keys: 1,
  lua: `for _, f in ipairs({ARGV[1], '*'}) do
  if redis.call('HINCRBY', KEYS[1], f, -1) <= 0 then redis.call('HDEL', KEYS[1], f) end
end
return 1`,
};

/**
 * KEYS: nodes, this node's hash. ARGV: node, nodeTimeout, then ip, count pairs (`*` included).
 * The heartbeat: the node's hash rewritten from its own counts, its deadline moved on.
 */
const REFRESH: StoreScript = {
  name: 'conn_refresh',
  keys: 2,
  lua: `${NOW}
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('DEL', KEYS[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
if #ARGV > 2 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1`,
};

/** KEYS: nodes. ARGV: node, then this node's hash keys. A clean stop: its counts go at once. */
const LEAVE: StoreScript = {
  name: 'conn_leave',
  keys: 1,
  lua: `redis.call('ZREM', KEYS[1], ARGV[1])
for i = 2, #ARGV do redis.call('DEL', ARGV[i]) end
return 1`,
};

/** This node's open connections on one listener. */
interface LocalCounts {
  total: number;
  readonly perIp: Map<string, number>;
}

export class SharedConnections implements SharedSlots {
  /** Unique among the nodes: host, process, and a random part for a PID reused after a restart. */
  readonly node = `${os.hostname()}.${process.pid}.${Math.random().toString(36).slice(2, 8)}`;
  private readonly local = new Map<string, LocalCounts>();
  private readonly outage: StoreOutage;
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;

  constructor(
    private readonly store: () => ScriptStore,
    private readonly options: SharedConnectionsOptions,
  ) {
    this.outage = new StoreOutage(options.log, 'connection counts', 'each node applies the connection limits to its own connections');
  }

  /** Starts the heartbeat. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.refresh(), Math.max(500, Math.floor(this.options.nodeTimeout / 3)));
    this.timer.unref();
  }

  /** Stops the heartbeat and takes this node's counts out of Redis (best effort: if Redis is away they expire). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.refreshing;
    const hashes = [...this.local.keys()].map((l) => this.prefixed(this.hashKey(l)));
    await this.store()
      .runScript(LEAVE, ['conn:nodes'], [this.node, ...hashes])
      .catch(() => undefined);
  }

  /** This node's own connections on a listener (`yubin status` in a cluster's primary). */
  total(listener: string): number {
    return this.local.get(listener)?.total ?? 0;
  }

  async acquire(listener: string, ip: string): Promise<SharedSlot> {
    const own = this.count(listener, ip, +1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.count(listener, ip, -1);
      this.store()
        .runScript(RELEASE, [this.hashKey(listener)], [ip])
        .then(
          () => this.outage.ok(),
          (err: unknown) => this.outage.failed(err),
        );
    };
    try {
      const raw = (await this.store().runScript(ACQUIRE, ['conn:nodes', this.hashKey(listener)], [this.prefixed('conn:n:'), listener, ip, this.node, this.options.nodeTimeout])) as number[];
      this.outage.ok();
      const [rank, total] = raw.map(Number) as [number, number];
      // Never fewer than this node alone has: Redis may have restarted empty since the last heartbeat.
      return { rank: Math.max(rank, own.rank), total: Math.max(total, own.total), release };
    } catch (err) {
      this.outage.failed(err);
      return { ...own, release };
    }
  }

  /** The heartbeat: every listener's hash rewritten from this node's counts. */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        for (const [listener, counts] of this.local) {
          const pairs: Array<string | number> = [];
          for (const [ip, n] of counts.perIp) pairs.push(ip, n);
          if (counts.total > 0) pairs.push('*', counts.total);
          await this.store().runScript(REFRESH, ['conn:nodes', this.hashKey(listener)], [this.node, this.options.nodeTimeout, ...pairs]);
        }
        this.outage.ok();
      } catch (err) {
        this.outage.failed(err);
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  private hashKey(listener: string): string {
    return `conn:n:${this.node}:${listener}`;
  }

  /** A key as Redis knows it (scripts build other nodes' keys, which the store cannot prefix for them). */
  private prefixed(key: string): string {
    return this.store().keyPrefix + key;
  }

  /** Moves this node's own count; returns what it is now (with +1: the new connection's rank and total). */
  private count(listener: string, ip: string, by: 1 | -1): { rank: number; total: number } {
    let l = this.local.get(listener);
    if (!l) this.local.set(listener, (l = { total: 0, perIp: new Map() }));
    const n = (l.perIp.get(ip) ?? 0) + by;
    if (n > 0) l.perIp.set(ip, n);
    else l.perIp.delete(ip);
    l.total = Math.max(0, l.total + by);
    return { rank: n, total: l.total };
  }
}
