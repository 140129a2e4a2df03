/**
 * The failed-login throttle with its counts in Redis (`loginThrottle.shared`,
 * the store's connection and prefix), so several nodes behind one name are
 * one throttle: an attacker who spreads guesses over them is locked out after
 * `lockoutAfter` in total, as against one node. The policy is LoginThrottle's
 * own (see login-throttle.ts): counts per IP, per account and per pair,
 * reserve-before-check, known networks, counts that fade after `window`.
 *
 * Each attempt is two scripts, each one round trip and atomic in Redis:
 * BEGIN reads the counts that apply and, unless locked, reserves the
 * attempt in each (so parallel attempts on two nodes cannot both pass the
 * last free slot); SETTLE gives the reservation back and, for a failure,
 * counts it. Keys, all under `<store prefix>login:`:
 *
 *   login:f:<count>      hash, n = failures; PEXPIRE window, or lockout once
 *                        n reached lockoutAfter (the fading, done by Redis)
 *   login:p:<count>      sorted set of attempts in progress, scored by a
 *                        deadline: a node that dies mid-attempt leaves a
 *                        reservation that lapses instead of one held forever
 *   login:known:<acct>   hash, client network -> last successful login (ms)
 *
 * where <count> is `ip:<ip>`, `user:<account>` or `pair:<ip>|<account>`.
 * Times are Redis's (TIME in the scripts): one clock for every node.
 *
 * When Redis does not answer, `onStoreFailure` decides: `local` (default)
 * counts in this process as a lone node does, so a guesser meets at least
 * each node's own throttle; `closed` refuses every login with a temporary
 * failure (454 4.7.0, POP3 -ERR [SYS/TEMP]) and checks no password. One line
 * is logged when the fallback starts and one when Redis answers again.
 */
import type { Logger } from 'pino';
import { clientNetwork } from '../ip.js';
import type { Clock } from './clock.js';
import { LoginThrottle, type LoginThrottleConfig, type LoginTicket, type ThrottledBy, type ThrottleVerdict } from './login-throttle.js';
import type { ScriptStore, StoreScript } from './store.js';
import { StoreOutage } from './store-outage.js';

export type ThrottleStoreFailure = 'local' | 'closed';

export interface SharedLoginThrottleConfig extends LoginThrottleConfig {
  readonly onStoreFailure: ThrottleStoreFailure;
}

/** Networks remembered per account, as in LoginThrottle. */
const MAX_KNOWN_NETWORKS = 16;
/**
 * How long a reservation outlives its node when nobody settles it (the node
 * died mid-attempt): the longest throttle wait plus this, which covers the
 * auth hook (hookTimeout, 30 s by default) with room to spare.
 */
const PENDING_GRACE_MS = 5 * 60_000;

const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/**
 * KEYS: known, then (failures, pending) for ip, account, pair.
 * ARGV: network, rememberSuccess, lockoutAfter, ticket, pendingTtl, hasAccount (1/0), reserve (1/0).
 * Returns { reserved, worst, by (1 ip, 2 account, 3 pair, 0 none), known }.
 */
const BEGIN: StoreScript = {
  name: 'login_begin',
  keys: 7,
  lua: `${NOW}
local remember = tonumber(ARGV[2])
local known = 0
if ARGV[6] == '1' and remember > 0 then
  local at = redis.call('HGET', KEYS[1], ARGV[1])
  if at then
    if now - tonumber(at) <= remember then known = 1 else redis.call('HDEL', KEYS[1], ARGV[1]) end
  end
end
local apply
if ARGV[6] ~= '1' then apply = {1} elseif known == 1 then apply = {3} else apply = {1, 2, 3} end
local worst, by = 0, 0
for _, i in ipairs(apply) do
  local p = KEYS[2 * i + 1]
  redis.call('ZREMRANGEBYSCORE', p, '-inf', now)
  local n = tonumber(redis.call('HGET', KEYS[2 * i], 'n') or '0') + redis.call('ZCARD', p)
  if n > worst then worst = n; by = i end
end
if worst >= tonumber(ARGV[3]) or ARGV[7] ~= '1' then return {0, worst, by, known} end
local ttl = tonumber(ARGV[5])
for _, i in ipairs(apply) do
  local p = KEYS[2 * i + 1]
  redis.call('ZADD', p, now + ttl, ARGV[4])
  redis.call('PEXPIRE', p, ttl)
end
return {1, worst, by, known}`,
};

/**
 * KEYS: known, then (failures, pending) for ip, account, pair; only the counts
 * the attempt was reserved in are touched (ARGV[7], e.g. "1,2,3" or "3").
 * ARGV: ticket, how (failed/released/succeeded), lockoutAfter, window, lockout, network, counts, rememberSuccess.
 * A failure is counted in each; a success forgets the pair's failures and
 * makes the network known. Returns the counts (1..3) that reached lockoutAfter.
 */
const SETTLE: StoreScript = {
  name: 'login_settle',
  keys: 7,
  lua: `${NOW}
local reached = {}
local lockoutAfter = tonumber(ARGV[3])
for i in string.gmatch(ARGV[7], '%d') do
  i = tonumber(i)
  local f, p = KEYS[2 * i], KEYS[2 * i + 1]
  redis.call('ZREM', p, ARGV[1])
  if ARGV[2] == 'failed' then
    local n = redis.call('HINCRBY', f, 'n', 1)
    if n >= lockoutAfter then redis.call('PEXPIRE', f, ARGV[5]) else redis.call('PEXPIRE', f, ARGV[4]) end
    if n == lockoutAfter then table.insert(reached, i) end
  end
end
if ARGV[2] == 'succeeded' then
  redis.call('DEL', KEYS[6])
  local remember = tonumber(ARGV[8])
  if remember > 0 then
    redis.call('HSET', KEYS[1], ARGV[6], now)
    redis.call('PEXPIRE', KEYS[1], remember)
    if redis.call('HLEN', KEYS[1]) > ${MAX_KNOWN_NETWORKS} then
      local all = redis.call('HGETALL', KEYS[1])
      local oldest, at = nil, nil
      for j = 1, #all, 2 do
        local v = tonumber(all[j + 1])
        if at == nil or v < at then oldest = all[j]; at = v end
      end
      redis.call('HDEL', KEYS[1], oldest)
    end
  end
end
return reached`,
};

const BY: ReadonlyArray<ThrottledBy | undefined> = [undefined, 'ip', 'account', 'ip+account'];

/** What the server answers in `closed` mode while Redis is down. */
const UNAVAILABLE: ThrottleVerdict = Object.freeze({ locked: true, wait: 0, failures: 0, by: undefined, unavailable: true });

let tickets = 0;

/** BEGIN's answer: whether the attempt holds a reservation, the verdict, and the counts it applies to ("123", "3", "1"). */
interface Begun {
  readonly reserved: boolean;
  readonly verdict: ThrottleVerdict;
  readonly counts: string;
}

export class SharedLoginThrottle extends LoginThrottle {
  private readonly outage: StoreOutage;
  /** Makes ticket ids unique across nodes. */
  private readonly node = `${process.pid}.${Math.random().toString(36).slice(2, 10)}`;

  constructor(
    config: SharedLoginThrottleConfig,
    clock: Clock,
    /** The store (opened on first use: check-config opens no connection). */
    private readonly store: () => ScriptStore,
    log: Logger,
  ) {
    super(config, clock);
    this.outage = new StoreOutage(log, 'login throttle', config.onStoreFailure === 'closed' ? 'refusing every login (454 4.7.0 / -ERR [SYS/TEMP])' : 'counting failed logins on this node only');
  }

  private get shared(): SharedLoginThrottleConfig {
    return this.config as SharedLoginThrottleConfig;
  }

  /** The keys of one attempt, in the scripts' order. */
  private redisKeys(ip: string, account: string): string[] {
    const count = (name: string) => [`login:f:${name}`, `login:p:${name}`];
    return [`login:known:${account}`, ...count(`ip:${ip}`), ...count(`user:${account}`), ...count(`pair:${ip}|${account}`)];
  }

  private async ask(ip: string, account: string, reserve: boolean, ticket: string): Promise<Begun> {
    const c = this.shared;
    const pendingTtl = c.maxDelay + PENDING_GRACE_MS;
    const raw = (await this.store().runScript(BEGIN, this.redisKeys(ip, account), [clientNetwork(ip), c.rememberSuccess, c.lockoutAfter, ticket, pendingTtl, account ? 1 : 0, reserve ? 1 : 0])) as number[];
    const [reserved, worst, by, known] = raw.map(Number) as [number, number, number, number];
    const counts = !account ? '1' : known ? '3' : '123';
    return { reserved: reserved === 1, verdict: this.verdict(worst, BY[by]), counts };
  }

  /** One round trip: the verdict, and the attempt reserved in every count that applies. */
  override async take(ip: string, account: string): Promise<LoginTicket> {
    const id = `${this.node}.${++tickets}`;
    let begun: Begun;
    try {
      begun = await this.ask(ip, account, true, id);
      this.outage.ok();
    } catch (err) {
      this.outage.failed(err);
      if (this.shared.onStoreFailure === 'closed') return { verdict: UNAVAILABLE, succeeded: noop, failed: noop, released: noop };
      return this.begin(ip, account);
    }
    const { verdict, counts } = begun;
    if (!begun.reserved) {
      this.stats.refused[verdict.by ?? 'ip']++;
      return { verdict, succeeded: noop, failed: noop, released: noop };
    }
    let done = false;
    const settle = (how: 'failed' | 'released' | 'succeeded') => {
      if (done) return;
      done = true;
      const c = this.shared;
      this.store()
        .runScript(SETTLE, this.redisKeys(ip, account), [id, how, c.lockoutAfter, c.window, c.lockout, clientNetwork(ip), counts, c.rememberSuccess])
        .then(
          (reached) => {
            this.outage.ok();
            for (const i of reached as number[]) this.stats.lockouts[BY[Number(i)] ?? 'ip']++;
          },
          // Lost: the failure is not counted (the reservation lapses by itself).
          (err: unknown) => this.outage.failed(err),
        );
    };
    return { verdict, failed: () => settle('failed'), released: () => settle('released'), succeeded: () => settle('succeeded') };
  }

  override async preview(ip: string, account: string): Promise<ThrottleVerdict> {
    try {
      const { verdict } = await this.ask(ip, account, false, '');
      this.outage.ok();
      return verdict;
    } catch (err) {
      this.outage.failed(err);
      return this.shared.onStoreFailure === 'closed' ? UNAVAILABLE : this.peek(ip, account);
    }
  }
}

function noop(): void {}
