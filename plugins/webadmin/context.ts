/**
 * What every webadmin route needs: the vpopmail store the mail plugin reads,
 * the admin database, the vacation settings, the logger, the config.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { commandOptions, type Config, type Services } from '../../core/index.js';
import { autorespondOptions, databasePath as vacationsPath } from '../autorespond/options.js';
import { Vacations } from '../autorespond/settings.js';
import { openStore, storePaths, vpopmailOptions, type StorePaths, type VpopmailOptions } from '../vpopmail/options.js';
import type { MailStore } from '../vpopmail/store.js';
import { AdminDb } from './admin-db.js';
import { databasePath, type WebadminOptions } from './options.js';
import { Sessions } from './sessions.js';

export interface WebadminContext {
  readonly options: WebadminOptions;
  readonly config: Config;
  readonly log: Logger;
  readonly services: Services;
  readonly sessions: Sessions;
  readonly vpopmail: VpopmailOptions;
  readonly paths: StorePaths;
  /** The same SQLite file the vpopmail plugin re-reads through its changeCounter: changes count at once. */
  store(): MailStore;
  admins(): AdminDb;
  vacations(): Vacations;
  /** mailauth's key directory (`keyDir`, default dkim) under dataDir. */
  readonly dkimDir: string;
  close(): Promise<void>;
}

/**
 * Logins outlive a reload (SIGHUP makes a new plugin instance): the sessions
 * of one dataDir are kept here, per session lifetime. A restart still ends them.
 */
const sessionsByDataDir = new Map<string, Sessions>();

function sessionsFor(dataDir: string, ttl: number, now: () => number): Sessions {
  const key = `${path.resolve(dataDir)}\0${ttl}`;
  let sessions = sessionsByDataDir.get(key);
  if (!sessions) sessionsByDataDir.set(key, (sessions = new Sessions(ttl, now)));
  return sessions;
}

export function createContext(args: { options: WebadminOptions; config: Config; log: Logger; services: Services; dataDir: string }): WebadminContext {
  const { options, config, log, services, dataDir } = args;
  const parsed = vpopmailOptions.safeParse(commandOptions(config, 'vpopmail'));
  if (!parsed.success) throw new Error(`webadmin: plugins.vpopmail: ${parsed.error.issues[0]?.message ?? 'invalid options'}`);
  const vacationOpts = autorespondOptions.safeParse(commandOptions(config, 'autorespond'));
  if (!vacationOpts.success) throw new Error(`webadmin: plugins.autorespond: ${vacationOpts.error.issues[0]?.message ?? 'invalid options'}`);
  const paths = storePaths(parsed.data, config.dataDir);
  const keyDir = (commandOptions(config, 'mailauth') as { keyDir?: unknown }).keyDir;
  let store: MailStore | undefined;
  let admins: AdminDb | undefined;
  let vacations: Vacations | undefined;
  return {
    options,
    config,
    log,
    services,
    sessions: sessionsFor(config.dataDir, options.sessionTtl, () => services.clock.now()),
    vpopmail: parsed.data,
    paths,
    dkimDir: path.resolve(config.dataDir, typeof keyDir === 'string' ? keyDir : 'dkim'),
    // Opened at first use: a server whose web pages nobody visits makes no files.
    store: () => (store ??= openStore(paths, log)),
    admins: () => (admins ??= new AdminDb(databasePath(options, dataDir))),
    vacations: () => (vacations ??= new Vacations(vacationsPath(vacationOpts.data, config.dataDir), () => services.clock.now())),
    async close() {
      admins?.close();
      vacations?.close();
      await store?.close();
    },
  };
}

/** Whether `yubin admin add` wrote anything yet (read-only callers need not create the file). */
export function adminDbExists(options: WebadminOptions, dataDir: string): boolean {
  return existsSync(databasePath(options, dataDir));
}
