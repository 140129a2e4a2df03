/**
 * The config file's shape. Every default here is the one a new listener gets,
 * chosen the way Postfix chooses its named limits: safe first, then generous.
 */
import { isIP } from 'node:net';
import os from 'node:os';
import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';
import { cipherListProblem } from '../tls.js';
import { FACILITY_NAMES } from '../syslog/format.js';
import { ipMatcher } from '../ip.js';

const size = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = parseSize(v);
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `not a size: ${JSON.stringify(v)} (use bytes or a number with k, M or G)` });
    return z.NEVER;
  }
  return n;
});

const duration = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = parseDuration(v);
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `not a duration: ${JSON.stringify(v)} (use seconds or a number with ms, s, m, h or d)` });
    return z.NEVER;
  }
  return n;
});

const positiveInt = z.number().int().positive();

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** `127.0.0.1:25`, `[::1]:25`, `0.0.0.0:25`, `[::]:25`. */
export function parseListen(value: string): ListenAddress | string {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value.trim());
  if (!m) return 'expected HOST:PORT, with an IPv6 address in brackets ([::1]:25)';
  const host = (m[1] ?? m[2])!;
  const port = Number(m[3]);
  if (!isIP(host)) return `${host} is not an IP address`;
  if (m[1] && isIP(host) !== 6) return `${host} in brackets must be an IPv6 address`;
  if (port > 65535) return `port ${port} is out of range`;
  return { host, port };
}

const listen = z.string().transform((v, ctx) => {
  const parsed = parseListen(v);
  if (typeof parsed === 'string') {
    ctx.addIssue({ code: 'custom', message: parsed });
    return z.NEVER;
  }
  return parsed;
});

const hostname = z.string().regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i, 'not a host name');

/** A plugin as a list names it, with the options given in that place only (merged over `plugins.NAME`). */
export interface PluginUse {
  readonly ref: string;
  readonly options: Readonly<Record<string, unknown>> | undefined;
}

const pluginOptionsBlock = z.record(z.string(), z.unknown());

/**
 * A `plugins` list entry: a name (`tcprules`), or a one-key map naming the
 * plugin with options for this listener (`rblsmtpd: { permanent: true }`).
 */
const pluginEntry = z.union([z.string(), z.record(z.string(), z.unknown())]).transform((v, ctx): PluginUse => {
  if (typeof v === 'string') {
    if (!v) ctx.addIssue({ code: 'custom', message: 'a plugin name cannot be empty' });
    return { ref: v, options: undefined };
  }
  const keys = Object.keys(v);
  if (keys.length !== 1 || !keys[0]) {
    ctx.addIssue({ code: 'custom', message: `a plugin entry is a name or a map with one key, { NAME: { options } }; this one has ${keys.length} keys (${keys.join(', ')})` });
    return z.NEVER;
  }
  const ref = keys[0];
  const options = v[ref] ?? {};
  const parsed = pluginOptionsBlock.safeParse(options);
  if (!parsed.success || Array.isArray(options)) {
    ctx.addIssue({ code: 'custom', path: [ref], message: `the options of ${ref} must be a map ({ key: value }), not ${Array.isArray(options) ? 'a list' : typeof options}` });
    return z.NEVER;
  }
  return { ref, options: parsed.data };
});

/** Same plugin with the same options twice in one list: a copy-paste slip, not two instances. */
/** The TLS keys every listener kind shares: cert and key together, a usable cipher list, no unused certificate. */
function checkTls(l: { cert?: string; key?: string; tls: string; tlsCiphers?: string }, ctx: z.RefinementCtx): void {
    if ((l.cert === undefined) !== (l.key === undefined)) {
      ctx.addIssue({ code: 'custom', path: [l.cert === undefined ? 'cert' : 'key'], message: 'cert and key go together' });
    }
    if (l.tlsCiphers !== undefined) {
      const problem = cipherListProblem(l.tlsCiphers);
      if (problem) ctx.addIssue({ code: 'custom', path: ['tlsCiphers'], message: problem });
    }
    if (l.tls === 'none' && l.cert !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['cert'], message: 'a certificate on a listener with tls: none is never used' });
    }
}

function refuseRepeats(list: readonly PluginUse[], ctx: z.RefinementCtx, at: ReadonlyArray<string | number>): void {
  const seen = new Set<string>();
  list.forEach((p, i) => {
    const key = `${p.ref}\0${JSON.stringify(p.options ?? {})}`;
    if (seen.has(key)) ctx.addIssue({ code: 'custom', path: [...at, i], message: `plugin ${p.ref} is listed twice${p.options ? ' with the same options' : ''}` });
    seen.add(key);
  });
}

export const limitsSchema = z.strictObject({
  /** Advertised with SIZE and enforced with 552 after the final dot. */
  maxMessageSize: size.default(25 * 1024 * 1024),
  /** Header section limit; the headers are the only part of a message held in memory. */
  maxHeaderSize: size.default(256 * 1024),
  maxRecipients: positiveInt.default(100),
  /** Messages (MAIL commands accepted) in one connection; past it 421 and close. 0: no limit. Advertised as LIMITS MAILMAX. */
  maxMessagesPerConnection: z.number().int().min(0).default(0),
  /** Recipient domains in one message; past it 452 4.5.3. 0: no limit. Advertised as LIMITS RCPTDOMAINMAX. */
  maxRecipientDomains: z.number().int().min(0).default(0),
  /** Longest command or message line, CRLF included. */
  maxLineLength: z.number().int().min(512).default(4096),
  idleTimeout: duration.default(300_000),
  /**
   * The idle timeout until the client's first valid command (HELO/EHLO; a POP3 login):
   * a connection that says nothing useful gives its slot back soon.
   */
  firstCommandTimeout: duration.default(30_000),
  /** Longest a connection may last, however busy (spamdyke's connection-timeout-secs). */
  maxConnectionTime: duration.default(3_600_000),
  /**
   * In DATA, after min(idleTimeout, 60 s), the client must keep up this many bytes a
   * second on average (Postfix's smtpd_min_data_rate), or gets 421; 0: no minimum.
   */
  minDataRate: z.number().int().min(0).default(500),
  maxConnections: positiveInt.default(100),
  /**
   * Open connections from one IP address (tcpserver's MAXCONNIP); past it, 421 after the
   * connect hook, so a tcprules rule can raise or lower it for some clients. 0: no limit.
   */
  maxConnectionsPerIp: z.number().int().min(0).default(20),
  /** Failed AUTH attempts before the connection is closed. */
  maxAuthFailures: positiveInt.default(3),
});

/**
 * `proxy`: the listener sits behind a load balancer speaking HAProxy's PROXY
 * protocol (v1 or v2). A connection from a `trusted` address must start with a
 * header, and the client it names is the one every hook, limit, log line and
 * Received line sees; a missing, malformed or oversized header (or none within
 * `timeout`) drops the connection without a greeting. A connection from any other
 * address is refused (SMTP `421 4.7.0`, POP3 `-ERR [SYS/PERM]`) before a byte of it
 * is read, as Postfix's smtpd_upstream_proxy_protocol refuses clients that bypass
 * the proxy: such a port is the proxy's only, and a header from anyone else is
 * never believed. Without `proxy`, a PROXY line is an unknown command as before.
 */
export const proxySchema = z.strictObject({
  /** Addresses and CIDR blocks of the proxies (`10.0.0.0/8`, `::1`). */
  trusted: z
    .array(z.string())
    .min(1, 'name at least one proxy address or CIDR block')
    .superRefine((list, ctx) => {
      list.forEach((entry, i) => {
        try {
          if (!entry.trim()) throw new Error('an empty entry');
          ipMatcher([entry]);
        } catch (err) {
          ctx.addIssue({ code: 'custom', path: [i], message: (err as Error).message });
        }
      });
    }),
  /** How long a trusted proxy has to send the whole header. */
  timeout: duration.default(5_000),
});

const listenerName = z.string().regex(/^[a-z0-9][a-z0-9_-]*$/i, 'use letters, digits, - and _');

export const listenerSchema = z
  .strictObject({
    name: listenerName,
    /** smtp (with submission as a flavour of it) or pop3; the mailbox plugin on a pop3 listener serves its auth hook. */
    protocol: z.enum(['smtp', 'pop3']),
    listen,
    tls: z.enum(['none', 'starttls', 'implicit']).default('none'),
    cert: z.string().optional(),
    key: z.string().optional(),
    /** Mozilla's TLS profile: intermediate (TLS 1.2 with forward-secret AEAD suites, and 1.3) or modern (TLS 1.3 only). */
    tlsProfile: z.enum(['intermediate', 'modern']).default('intermediate'),
    /** TLS 1.2 cipher list in OpenSSL's syntax, replacing the profile's (for a client that needs an older suite). */
    tlsCiphers: z.string().min(1).optional(),
    /** MAIL needs a successful AUTH first (submission). */
    requireAuth: z.boolean().default(false),
    /** Offer AUTH on a connection without TLS. Off: passwords never cross the wire in clear. */
    allowInsecureAuth: z.boolean().default(false),
    /** Text after `220 hostname` in the greeting. */
    greeting: z.string().default('ESMTP'),
    limits: limitsSchema.default(() => limitsSchema.parse({})),
    /** In order; each a name or `{ NAME: { options for this listener } }`. */
    plugins: z.array(pluginEntry).default([]),
    /** Behind a proxy speaking the PROXY protocol: see proxySchema. */
    proxy: proxySchema.optional(),
  })
  .superRefine((l, ctx) => {
    checkTls(l, ctx);
    refuseRepeats(l.plugins, ctx, ['plugins']);
  });

// ---- HTTP listeners (issue 13): services over HTTP rather than mail protocols.

/** What an http listener serves of its own; any other name in `serve` is a plugin with an HTTP service (webadmin). */
export const BUILTIN_HTTP_SERVICES = ['metrics'] as const;
export type BuiltinHttpService = (typeof BUILTIN_HTTP_SERVICES)[number];

export function isBuiltinHttpService(name: string): name is BuiltinHttpService {
  return (BUILTIN_HTTP_SERVICES as readonly string[]).includes(name);
}

/** Keys of smtp and pop3 listeners that mean nothing on an http one: named in the error rather than "unrecognized". */
const MAIL_ONLY_KEYS = new Set(['plugins', 'limits', 'requireAuth', 'allowInsecureAuth', 'greeting', 'proxy']);

export const httpListenerSchema = z
  .strictObject(
    {
      name: listenerName,
      protocol: z.literal('http'),
      listen,
      /** HTTPS from the first byte, or plain HTTP (fine on loopback); HTTP has no STARTTLS. */
      tls: z.enum(['none', 'implicit'], { error: (iss) => (iss.input === 'starttls' ? 'an http listener has no STARTTLS: use tls: implicit (HTTPS) or none' : undefined) }).default('none'),
      cert: z.string().optional(),
      key: z.string().optional(),
      tlsProfile: z.enum(['intermediate', 'modern']).default('intermediate'),
      tlsCiphers: z.string().min(1).optional(),
      /** What it serves: metrics is GET /metrics (Prometheus); any other name is a plugin serving HTTP (webadmin), with options from `plugins.NAME`. */
      serve: z.array(z.string().min(1, 'a service name cannot be empty')).min(1, 'name what the listener serves, e.g. serve: [metrics]'),
    },
    {
      error: (iss) => {
        if (iss.code !== 'unrecognized_keys') return undefined;
        const mailOnly = iss.keys.filter((k) => MAIL_ONLY_KEYS.has(k));
        return mailOnly.length ? `an http listener has no ${mailOnly.join(', ')}: ${mailOnly.length > 1 ? 'those are' : 'that is'} for smtp and pop3 listeners` : undefined;
      },
    },
  )
  .superRefine((l, ctx) => {
    checkTls(l, ctx);
    l.serve.forEach((s, i) => {
      if (l.serve.indexOf(s) !== i) ctx.addIssue({ code: 'custom', path: ['serve', i], message: `${s} is listed twice` });
    });
  });

/** A listener of any protocol: smtp and pop3 (listenerSchema) or http. */
const anyListenerSchema = z.discriminatedUnion('protocol', [listenerSchema, httpListenerSchema]);

const emailAddress = z.string().regex(/^[^@\s<>]+@[^@\s<>]+$/, 'not an address (local@domain)');

/** `host:port` of a DNS server, `[v6]:port` for IPv6; the port defaults to 53. */
const dnsServer = z.string().refine((v) => /^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]+\])(?::\d{1,5})?$/i.test(v) || isIP(v) === 6, 'expected an IP address, optionally with :port ([v6]:port)');

export const dnsSchema = z.strictObject({
  /** Resolvers to ask; empty: the system's (/etc/resolv.conf). */
  servers: z.array(dnsServer).default([]),
  /** One query's timeout. */
  timeout: duration.default(5_000),
  tries: positiveInt.default(2),
  /** Answers kept (TTL-respecting, least recently used out first); 0 turns the cache off. */
  cacheSize: z.number().int().min(0).default(10_000),
  /** Bounds on how long an answer is kept, whatever its TTL says; negative answers use negativeTtl. */
  minTtl: duration.default(0),
  maxTtl: duration.default(86_400_000),
  negativeTtl: duration.default(300_000),
});

export const storeSchema = z.strictObject({
  /** Where plugins keep state (greylisting, counters): memory, sqlite (dataDir/state.sqlite) or redis. */
  backend: z.enum(['memory', 'sqlite', 'redis']).default('sqlite'),
  /** SQLite file, relative to dataDir. */
  file: z.string().min(1).default('state.sqlite'),
  /** Redis URL, e.g. redis://127.0.0.1:6379/0 (backend redis). */
  url: z.string().min(1).optional(),
  /** Prefix of every key in Redis, so several yubin clusters can share one server. */
  prefix: z.string().default('yubin:'),
});

/** `log.syslog`: the server's log also goes to the local syslog, one sentence a line. */
export const syslogSchema = z.strictObject({
  facility: z.enum(FACILITY_NAMES).default('mail'),
  /** Each line's tag: `yubin[PID]: ...`. */
  tag: z.string().regex(/^[A-Za-z0-9._/-]{1,32}$/, 'up to 32 letters, digits, ., _, / and -').default('yubin'),
  /** The syslog daemon's datagram socket. */
  socket: z.string().min(1).default('/dev/log'),
});

export const logSchema = z.strictObject({
  /** Absent: no syslog. `syslog: {}` (or an empty `syslog:`) takes every default. */
  syslog: z.preprocess((v) => (v === null ? {} : v), syslogSchema).optional(),
});

/** `example.com` is that domain only, `.example.com` every name below it (smtproutes' own rule). */
const routeKey = z.string().regex(/^\.?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/, 'a domain, or .domain for the names below it');

export const queueSchema = z.strictObject({
  /** Parallel local deliveries (qmail's concurrencylocal); 0 holds local mail. */
  concurrencyLocal: z.number().int().min(0).default(10),
  /** Parallel remote deliveries (concurrencyremote); 0 holds remote mail. */
  concurrencyRemote: z.number().int().min(0).default(20),
  /** Parallel remote deliveries to one destination domain. */
  concurrencyPerDomain: positiveInt.default(10),
  /**
   * Limits for some destination domains (`example.com`, or `.example.com` for every name
   * below it): `concurrency` in place of concurrencyPerDomain, and `rateDelay`, the least
   * time between two deliveries to it (Postfix's destination_rate_delay; one at a time).
   */
  destinations: z.record(routeKey, z.strictObject({ concurrency: positiveInt.optional(), rateDelay: duration.optional() })).default({}),
  /** After this long in the queue a temporary failure is final (queuelifetime). */
  lifetime: duration.default(7 * 86_400_000),
  /**
   * Delays between attempts; the last one repeats. Unset: qmail's schedule,
   * birth + (floor(sqrt(age)) + c)^2 seconds with c = 10 local, 20 remote.
   */
  retry: z.array(duration).min(1).optional(),
  /** Local part of the bounce sender: MAILER-DAEMON@hostname. */
  bounceFrom: z.string().regex(/^[^@\s<>]+$/, 'a local part, without @').default('MAILER-DAEMON'),
  /** Where a bounce that cannot be delivered goes (qmail's doublebounceto). Default postmaster@hostname. */
  doubleBounceTo: emailAddress.optional(),
  /** Send a delay notice once a message has waited this long (off by default, as in qmail). */
  delayWarning: duration.optional(),
  /**
   * Free space the spool's filesystem must keep (Postfix's queue_minfree): below it, MAIL
   * gets 452 4.3.1 and an alarm is logged every minute. 0: no check.
   */
  minFreeSpace: size.default(100 * 1024 * 1024),
});

const tlsMode = z.enum(['none', 'starttls', 'implicit']);

export const smarthostSchema = z.strictObject({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(587),
  tls: tlsMode.default('starttls'),
  user: z.string().optional(),
  password: z.string().optional(),
  /** Check the relay's certificate (off only for a relay with a private CA you cannot install). */
  verifyCertificate: z.boolean().default(true),
});

/** A relay for some destination domains (qmail's control/smtproutes lines). */
export const routeSchema = z.strictObject({
  /** The relay; "" sends to the domain's own MX even when a smarthost is set (smtproutes' `domain:`). */
  host: z.string(),
  port: z.number().int().min(1).max(65535).default(25),
  /** opportunistic: STARTTLS when offered, certificate unchecked, as between MX hosts. */
  tls: z.enum(['opportunistic', 'none', 'starttls', 'implicit']).default('opportunistic'),
  user: z.string().optional(),
  password: z.string().optional(),
  /** With starttls or implicit: check the relay's certificate. */
  verifyCertificate: z.boolean().default(true),
});


export const deliverySchema = z.strictObject({
  /** Plugins serving the deliver hook, in order; the first to accept, defer or reject a recipient decides. Entries as in a listener. */
  plugins: z.array(pluginEntry).default([]),
  /** Port of remote MX hosts (25; another value only for tests and unusual networks). */
  remotePort: z.number().int().min(1).max(65535).default(25),
  /** Name given in EHLO; default hostname. */
  heloName: hostname.optional(),
  /** All remote mail through this relay instead of MX lookups. */
  smarthost: smarthostSchema.optional(),
  /** Relays by destination domain, before the smarthost: the domain itself, then `.parent` keys from the nearest up. */
  routes: z.record(routeKey, routeSchema).default({}),
  connectTimeout: duration.default(30_000),
  greetingTimeout: duration.default(300_000),
  /** Longest silence from the remote server during a transaction. */
  commandTimeout: duration.default(300_000),
  /** STARTTLS when the remote offers it (certificate not checked, as is usual between MTAs). */
  opportunisticTls: z.boolean().default(true),
  /** MTA-STS (RFC 8461): honour the policies of destination domains (MX delivery only, not routes or the smarthost). */
  mtaSts: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** Port of https://mta-sts.DOMAIN (443; another value only for tests). */
      port: z.number().int().min(1).max(65535).default(443),
      /** Limit for fetching one policy. */
      timeout: duration.default(10_000),
    })
    .default({ enabled: true, port: 443, timeout: 10_000 }),
  /**
   * DANE (RFC 7672): MX hosts with DNSSEC-signed TLSA records are only used over
   * STARTTLS with a certificate the records name. Needs a validating resolver
   * whose AD bit can be trusted: one on this host (Postfix's "dane" level asks the same).
   */
  dane: z
    .strictObject({
      enabled: z.boolean().default(false),
      /** The trusted validating resolver: IP, IP:port or [IPv6]:port. Only its AD bit is believed. */
      resolver: dnsServer.default('127.0.0.1'),
      /** Limit for one query. */
      timeout: duration.default(5_000),
    })
    .default({ enabled: false, resolver: '127.0.0.1', timeout: 5_000 }),
  /** Extra trusted CA certificates (PEM file) for verified TLS: MTA-STS, REQUIRETLS, relays (Postfix's smtp_tls_CAfile). */
  caFile: z.string().min(1).optional(),
  /** Sessions kept open for the next message to the same destination (Postfix's connection cache). */
  connectionReuse: z
    .strictObject({
      /** Messages over one session, then QUIT. */
      maxMessages: positiveInt.default(100),
      /** QUIT after this long unused; 0 turns reuse off. */
      idleTime: duration.default(5_000),
      /** Not reused once this old. */
      maxAge: duration.default(300_000),
    })
    .default({ maxMessages: 100, idleTime: 5_000, maxAge: 300_000 }),
});

/** The decision journal `yubin why` reads: every connection, decision and queue event. */
export const journalSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** Relative to dataDir. */
  file: z.string().min(1).default('journal.sqlite'),
  /** Events older than this are dropped. */
  maxAge: duration.default(14 * 86_400_000),
  /** Past this size the oldest events go first. */
  maxSize: size.default(1024 * 1024 * 1024),
});

export const loginThrottleSchema = z.strictObject({
  /** Failed logins (per client IP and per account) that cost nothing. */
  freeFailures: z.number().int().min(0).default(2),
  /** Wait before the next answer after that; doubles with each further failure. */
  delay: duration.default(1_000),
  maxDelay: duration.default(16_000),
  /** Failures after which logins are refused outright for `lockout`. */
  lockoutAfter: positiveInt.default(10),
  lockout: duration.default(15 * 60_000),
  /** Failures are forgotten this long after the last one. */
  window: duration.default(15 * 60_000),
  /**
   * A successful login makes its client network (/24, /64) known to the account for this
   * long: the account's and the IP's counts, and so their lockouts, do not apply there. 0: never.
   */
  rememberSuccess: duration.default(30 * 86_400_000),
  /**
   * Several nodes: the counts live in the store's Redis (store.backend redis), so failures,
   * delays and lockouts hold across every node (core/services/shared-login-throttle.ts).
   */
  shared: z.boolean().default(false),
  /** Shared, and Redis does not answer: local (count on this node alone) or closed (refuse logins with a temporary failure). */
  onStoreFailure: z.enum(['local', 'closed']).default('local'),
});

/**
 * `connectionCounts`: with `shared`, maxConnections and maxConnectionsPerIp count the
 * connections of every node, kept in the store's Redis (core/session/shared-connections.ts).
 * Redis away: each node counts its own (fail open to local counts).
 */
export const connectionCountsSchema = z.strictObject({
  shared: z.boolean().default(false),
  /** A node that has not refreshed its counts for this long (crashed) is left out; refreshed every third of it. */
  nodeTimeout: duration.refine((ms) => ms >= 1_500, 'at least 1.5s').default(30_000),
});

export const configSchema = z
  .strictObject({
    hostname: hostname.default(() => os.hostname()),
    dataDir: z.string().min(1).default('./var'),
    /** Domains delivered here (qmail's locals and virtualdomains). */
    localDomains: z.array(hostname).default(['localhost']),
    /** How long one plugin may take to answer one hook. */
    hookTimeout: duration.default(30_000),
    /**
     * Processes accepting connections: 1 (the default) is one process doing
     * everything; N > 1 or `auto` (one per core, os.availableParallelism())
     * runs a primary that owns the queue, the control socket and the http
     * listeners, and N workers that run the smtp and pop3 listeners
     * (core/cluster/).
     */
    workers: z
      .union([z.literal('auto'), z.number().int().min(1, 'must be a whole number of at least 1, or auto')], { error: 'must be a whole number of at least 1, or auto' })
      .default(1)
      .transform((w) => (w === 'auto' ? Math.max(1, os.availableParallelism()) : w)),
    /** How long SIGTERM waits for transactions in progress. */
    shutdownTimeout: duration.default(30_000),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
    /** Where the log goes besides stdout. */
    log: logSchema.default(() => logSchema.parse({})),
    /** One options block per plugin, keyed as the lists name it; a list entry's own options are merged over it. */
    plugins: z.record(z.string(), z.union([pluginOptionsBlock, z.null().transform(() => ({}))])).default({}),
    listeners: z.array(anyListenerSchema).min(1, 'at least one listener is needed'),
    dns: dnsSchema.default(() => dnsSchema.parse({})),
    queue: queueSchema.default(() => queueSchema.parse({})),
    delivery: deliverySchema.default(() => deliverySchema.parse({})),
    /** State shared by plugins between connections (and between hosts, with redis). */
    store: storeSchema.default(() => storeSchema.parse({})),
    /** Failed SMTP AUTH and POP3 logins, counted together. */
    loginThrottle: loginThrottleSchema.default(() => loginThrottleSchema.parse({})),
    /** Connection limits counted across several nodes (Redis). */
    connectionCounts: connectionCountsSchema.default(() => connectionCountsSchema.parse({})),
    journal: journalSchema.default(() => journalSchema.parse({})),
  })
  .superRefine((c, ctx) => {
    refuseRepeats(c.delivery.plugins, ctx, ['delivery', 'plugins']);
    // State shared by several nodes lives in the store's Redis: nothing else is shared between hosts.
    for (const key of ['loginThrottle', 'connectionCounts'] as const) {
      if (c[key].shared && c.store.backend !== 'redis') ctx.addIssue({ code: 'custom', path: [key, 'shared'], message: `needs store.backend: redis (the counts live in the store's Redis; the store is ${c.store.backend})` });
    }
    const names = new Set<string>();
    const addresses = new Map<string, number>();
    c.listeners.forEach((l, i) => {
      if (names.has(l.name)) ctx.addIssue({ code: 'custom', path: ['listeners', i, 'name'], message: `listener name ${l.name} is used twice` });
      names.add(l.name);
      if (l.listen.port === 0) return; // port 0: the system picks a free port for each (tests)
      const key = `${l.listen.host}:${l.listen.port}`;
      const other = addresses.get(key);
      if (other !== undefined) ctx.addIssue({ code: 'custom', path: ['listeners', i, 'listen'], message: `${key} is also the address of listeners[${other}]` });
      addresses.set(key, i);
    });
  });

export type Config = z.output<typeof configSchema>;
/** An smtp or pop3 listener: the kind with plugins and limits. */
export type ListenerConfig = z.output<typeof listenerSchema>;
export type HttpListenerConfig = z.output<typeof httpListenerSchema>;
export type AnyListenerConfig = ListenerConfig | HttpListenerConfig;

/** The smtp and pop3 listeners of a config: those with plugins and limits. */
export function mailListeners(config: { readonly listeners: readonly AnyListenerConfig[] }): ListenerConfig[] {
  return config.listeners.filter((l): l is ListenerConfig => l.protocol !== 'http');
}
export type Limits = z.output<typeof limitsSchema>;
export type DnsConfig = z.output<typeof dnsSchema>;
export type SyslogConfig = z.output<typeof syslogSchema>;
export type QueueConfig = z.output<typeof queueSchema>;
export type DeliveryConfig = z.output<typeof deliverySchema>;
export type RouteConfig = z.output<typeof routeSchema>;
export type LoginThrottleSettings = z.output<typeof loginThrottleSchema>;
export type ConnectionCountsConfig = z.output<typeof connectionCountsSchema>;
export type StoreConfig = z.output<typeof storeSchema>;
export type JournalConfig = z.output<typeof journalSchema>;
