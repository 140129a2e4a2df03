/**
 * The vpopmail plugin's options block (`plugins: vpopmail:` in the config),
 * shared by the plugin and the `yubin domain|user|alias` commands so both
 * find the same store and mailboxes.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { Logger } from 'pino';
import { PostgresStore } from './postgres-store.js';
import { SqliteStore } from './sqlite-store.js';
import type { MailStore } from './store.js';

/**
 * Where domains and users are kept: the embedded SQLite file (`database`), or
 * PostgreSQL for several nodes sharing one user base.
 */
const storeOptions = z
  .strictObject({
    backend: z.enum(['sqlite', 'postgres']).default('sqlite'),
    /** PostgreSQL connection URL, e.g. postgres://yubin@db.example.net/yubin; the password best from PGPASSWORD, as check-config prints options. */
    url: z.string().min(1).optional(),
  })
  .superRefine((s, ctx) => {
    if (s.backend === 'postgres' && !s.url) ctx.addIssue({ code: 'custom', path: ['url'], message: 'backend postgres needs url (e.g. postgres://yubin@db.example.net/yubin)' });
    if (s.backend === 'sqlite' && s.url) ctx.addIssue({ code: 'custom', path: ['url'], message: 'url is for backend postgres; the SQLite file is the `database` option' });
    if (s.url && !/^postgres(ql)?:\/\//.test(s.url)) ctx.addIssue({ code: 'custom', path: ['url'], message: 'expected a postgres:// or postgresql:// URL' });
  });

export const vpopmailOptions = z.strictObject({
  /** The SQLite store; relative to dataDir. */
  database: z.string().min(1).default('vpopmail.sqlite'),
  store: storeOptions.default({ backend: 'sqlite' }),
  /** Root of the domain directories (vpopmail's ~vpopmail/domains); relative to dataDir. */
  root: z.string().min(1).default('domains'),
  /** Domain for logins without one (vchkpw's default domain). */
  defaultDomain: z.string().min(1).optional(),
  /** Folder that mail flagged `X-Spam-Flag: YES` goes to where spam filing is on. */
  spamFolder: z
    .string()
    .regex(/^\.[A-Za-z0-9][A-Za-z0-9._-]*$/, 'a Maildir++ folder name such as .Spam')
    .default('.Spam'),
  /** A recipient already over quota at RCPT: defer (452 4.2.2), reject (552 5.2.2) or off (take it; it bounces at delivery). */
  overQuotaAtRcpt: z.enum(['defer', 'reject', 'off']).default('defer'),
  /**
   * A UNIX socket (relative to dataDir) where the server answers Dovecot's Lua
   * passdb/userdb (config/examples/dovecot-yubin.lua): logins checked with
   * yubin's hashes and throttle, without a process per login.
   */
  authSocket: z.string().min(1).optional(),
  /** An authenticated sender may only use their own address or an alias that forwards to it in MAIL FROM. */
  senderMustMatchLogin: z.boolean().default(true),
});

export type VpopmailOptions = z.output<typeof vpopmailOptions>;

/** The first problem of a bad options block, as one line naming the option (plugins.vpopmail.store.url: ...). */
export function optionsProblem(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'plugins.vpopmail: invalid options';
  return `${['plugins', 'vpopmail', ...issue.path.map(String)].join('.')}: ${issue.message}`;
}

export interface StorePaths {
  /** The SQLite file (also named when the store is PostgreSQL: `yubin store migrate` reads it). */
  readonly database: string;
  readonly root: string;
  /** Set when the store is PostgreSQL. */
  readonly postgresUrl?: string | undefined;
}

export function storePaths(options: VpopmailOptions, dataDir: string): StorePaths {
  return {
    database: path.resolve(dataDir, options.database),
    root: path.resolve(dataDir, options.root),
    postgresUrl: options.store.backend === 'postgres' ? options.store.url : undefined,
  };
}

/** The configured store; `log` hears when PostgreSQL goes away and comes back. */
export function openStore(paths: StorePaths, log?: Logger): MailStore {
  return paths.postgresUrl ? new PostgresStore(paths.postgresUrl, { log }) : new SqliteStore(paths.database);
}

/** What a store without a file answers to reads: nothing exists yet. */
const EMPTY_READS: Partial<Record<keyof MailStore, unknown>> = {
  getDomain: undefined,
  getUser: undefined,
  getAlias: undefined,
  listDomains: [],
  domainNames: [],
  listUsers: [],
  listAliases: [],
  aliasesTargeting: [],
  countUsers: 0,
};

/**
 * The server's view of the store: the database is opened once it exists, so
 * `check-config` and a server nobody has added a domain to create no file;
 * the first `yubin domain add` creates it and the server picks it up at its
 * next lookup. Writes (a re-hashed password) open or create it.
 */
export function openStoreWhenPresent(paths: StorePaths, log?: Logger): MailStore {
  // A database server is always there to ask (or answers that it is not).
  if (paths.postgresUrl) return openStore(paths, log);
  let inner: SqliteStore | undefined;
  const open = (create: boolean) => (inner ??= create || existsSync(paths.database) ? new SqliteStore(paths.database) : undefined);
  return new Proxy({} as MailStore, {
    get(_target, prop: keyof MailStore) {
      if (prop === 'close') return () => inner?.close();
      if (prop === 'changeCounter') return () => open(false)?.changeCounter() ?? -1;
      // SQLite's reads are synchronous: a cache sees a change at its next lookup without being told.
      if (prop === 'onChange') return undefined;
      const read = prop in EMPTY_READS;
      return (...args: unknown[]) => {
        const store = open(!read);
        if (!store) return EMPTY_READS[prop];
        return (store[prop] as (...a: unknown[]) => unknown).apply(store, args);
      };
    },
  });
}
