/**
 * The config file's shape. Every default here is the one a new listener gets,
 * chosen the way Postfix chooses its named limits: safe first, then generous.
 */
import { isIP } from 'node:net';
import os from 'node:os';
import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';

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

export const limitsSchema = z.strictObject({
  /** Advertised with SIZE and enforced with 552 after the final dot. */
  maxMessageSize: size.default(25 * 1024 * 1024),
  /** Header section limit; the headers are the only part of a message held in memory. */
  maxHeaderSize: size.default(256 * 1024),
  maxRecipients: positiveInt.default(100),
  /** Longest command or message line, CRLF included. */
  maxLineLength: z.number().int().min(512).default(4096),
  idleTimeout: duration.default(300_000),
  maxConnections: positiveInt.default(100),
  /** Failed AUTH attempts before the connection is closed. */
  maxAuthFailures: positiveInt.default(3),
});

export const listenerSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]*$/i, 'use letters, digits, - and _'),
    protocol: z.enum(['smtp']),
    listen,
    tls: z.enum(['none', 'starttls', 'implicit']).default('none'),
    cert: z.string().optional(),
    key: z.string().optional(),
    /** MAIL needs a successful AUTH first (submission). */
    requireAuth: z.boolean().default(false),
    /** Offer AUTH on a connection without TLS. Off: passwords never cross the wire in clear. */
    allowInsecureAuth: z.boolean().default(false),
    /** Text after `220 hostname` in the greeting. */
    greeting: z.string().default('ESMTP'),
    limits: limitsSchema.default(() => limitsSchema.parse({})),
    plugins: z.array(z.string().min(1)).default([]),
  })
  .superRefine((l, ctx) => {
    if ((l.cert === undefined) !== (l.key === undefined)) {
      ctx.addIssue({ code: 'custom', path: [l.cert === undefined ? 'cert' : 'key'], message: 'cert and key go together' });
    }
    if (l.tls === 'none' && l.cert !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['cert'], message: 'a certificate on a listener with tls: none is never used' });
    }
    const seen = new Set<string>();
    l.plugins.forEach((p, i) => {
      if (seen.has(p)) ctx.addIssue({ code: 'custom', path: ['plugins', i], message: `plugin ${p} is listed twice` });
      seen.add(p);
    });
  });

export const configSchema = z
  .strictObject({
    hostname: hostname.default(() => os.hostname()),
    dataDir: z.string().min(1).default('./var'),
    /** Domains delivered here (qmail's locals and virtualdomains). */
    localDomains: z.array(hostname).default(['localhost']),
    /** How long one plugin may take to answer one hook. */
    hookTimeout: duration.default(30_000),
    /** How long SIGTERM waits for transactions in progress. */
    shutdownTimeout: duration.default(30_000),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
    /** One options block per plugin, keyed as the listeners name it. */
    plugins: z.record(z.string(), z.unknown()).default({}),
    listeners: z.array(listenerSchema).min(1, 'at least one listener is needed'),
  })
  .superRefine((c, ctx) => {
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
export type ListenerConfig = z.output<typeof listenerSchema>;
export type Limits = z.output<typeof limitsSchema>;
