/**
 * `yubin store migrate --from sqlite --to postgres`: copies every domain with
 * its users (hashes, clear passwords, flags, created, last login) and aliases
 * from one mail store to another, all or nothing, then counts what the target
 * holds. Mailboxes and their quota usage (maildirsize) stay where they are.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import { CommandError, commandOptions, loadConfig } from '../../core/index.js';
import { optionsProblem, storePaths, vpopmailOptions, type VpopmailOptions } from './options.js';
import { describePostgresUrl, PostgresStore } from './postgres-store.js';
import { SqliteStore } from './sqlite-store.js';
import { StoreConflict, type DomainDump, type MailStore } from './store.js';

type Backend = 'sqlite' | 'postgres';

interface Side {
  readonly backend: Backend;
  /** The SQLite file, or the PostgreSQL URL. */
  readonly location: string;
  /** For messages: never a password. */
  readonly label: string;
}

interface MigrateOpts {
  config: string;
  from: Backend;
  to: Backend;
  fromUrl?: string;
  toUrl?: string;
  force?: boolean;
}

const usage = (message: string): never => {
  throw new CommandError(message);
};

/** Where one side is: the option if given, else what the config says. */
function side(backend: Backend, given: string | undefined, flag: string, options: VpopmailOptions, dataDir: string): Side {
  if (backend === 'postgres') {
    const url = given ?? (options.store.backend === 'postgres' ? options.store.url : undefined);
    if (!url) return usage(`${flag} is needed: the config's plugins.vpopmail.store is not postgres`);
    if (!/^postgres(ql)?:\/\//.test(url)) return usage(`${flag}: expected a postgres:// URL, got ${url.replace(/\/\/[^@/]*@/, '//…@')}`);
    return { backend, location: url, label: `postgres ${describePostgresUrl(url)}` };
  }
  const file = given === undefined ? storePaths(options, dataDir).database : path.resolve(given.replace(/^(sqlite|file):/, ''));
  return { backend, location: file, label: `sqlite ${file}` };
}

function open(s: Side): MailStore {
  return s.backend === 'postgres' ? new PostgresStore(s.location, { maxConnections: 2 }) : new SqliteStore(s.location);
}

async function dump(store: MailStore): Promise<DomainDump[]> {
  const out: DomainDump[] = [];
  for (const domain of await store.listDomains()) {
    out.push({ domain, users: await store.listUsers(domain.name), aliases: await store.listAliases(domain.name) });
  }
  return out;
}

interface Counts {
  domains: number;
  users: number;
  aliases: number;
  targets: number;
}

function countDumps(dumps: readonly DomainDump[]): Counts {
  return {
    domains: dumps.length,
    users: dumps.reduce((n, d) => n + d.users.length, 0),
    aliases: dumps.reduce((n, d) => n + d.aliases.length, 0),
    targets: dumps.reduce((n, d) => n + d.aliases.reduce((m, a) => m + a.targets.length, 0), 0),
  };
}

/** What the target holds of the copied domains, read back. */
async function countTarget(store: MailStore, names: readonly string[]): Promise<Counts> {
  const c: Counts = { domains: 0, users: 0, aliases: 0, targets: 0 };
  for (const name of names) {
    if (!(await store.getDomain(name))) continue;
    c.domains++;
    c.users += await store.countUsers(name);
    const aliases = await store.listAliases(name);
    c.aliases += aliases.length;
    c.targets += aliases.reduce((m, a) => m + a.targets.length, 0);
  }
  return c;
}

const plural = (n: number, word: string, words = `${word}s`) => `${n} ${n === 1 ? word : words}`;

export async function migrateStore(opts: MigrateOpts): Promise<string> {
  const { config } = await loadConfig(opts.config);
  const parsed = vpopmailOptions.safeParse(commandOptions(config, 'vpopmail'));
  if (!parsed.success) return usage(optionsProblem(parsed.error));
  const from = side(opts.from, opts.fromUrl, '--from-url', parsed.data, config.dataDir);
  const to = side(opts.to, opts.toUrl, '--to-url', parsed.data, config.dataDir);
  if (from.backend === to.backend && from.location === to.location) usage(`source and target are the same store (${from.label})`);
  // Opening a missing SQLite file would create an empty one and "copy" nothing.
  if (from.backend === 'sqlite' && !existsSync(from.location)) usage(`no SQLite mail store at ${from.location}`);

  const started = performance.now();
  const source = open(from);
  const target = open(to);
  try {
    const dumps = await dump(source);
    const names = dumps.map((d) => d.domain.name);
    const present = new Set(await target.domainNames());
    const clash = names.filter((n) => present.has(n));
    if (clash.length && !opts.force) {
      const shown = clash.slice(0, 5).join(', ') + (clash.length > 5 ? ', …' : '');
      usage(`the target already has ${plural(clash.length, 'domain')} of the source (${shown}): use --force to replace them with the source's`);
    }
    try {
      await target.importDomains(dumps, { replace: opts.force ?? false });
    } catch (err) {
      // Another writer added one of the domains between our look and the copy.
      if (err instanceof StoreConflict) usage(`${err.message} in the target: use --force to replace it`);
      throw err;
    }
    const expected = countDumps(dumps);
    const found = await countTarget(target, names);
    const what = (c: Counts) => `${plural(c.domains, 'domain')}, ${plural(c.users, 'user')}, ${plural(c.aliases, 'alias', 'aliases')} (${plural(c.targets, 'target')})`;
    if (JSON.stringify(found) !== JSON.stringify(expected)) {
      throw new CommandError(`copied, but the target holds ${what(found)} of the ${what(expected)} copied: check ${to.label}`, 1);
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    return `copied ${what(expected)} from ${from.label} to ${to.label} in ${seconds} s`;
  } finally {
    await source.close();
    await target.close();
  }
}

export function registerStoreCommands(program: Command, configOption: () => Option): void {
  // Another plugin may have made `store` already: add to it rather than make a second.
  const store = program.commands.find((c) => c.name() === 'store') ?? program.command('store').description('the mail store of domains, users and aliases');
  store
    .command('migrate')
    .description('copy every domain, user and alias from one mail store to another (sqlite to postgres, or back); mailboxes stay where they are')
    .addOption(configOption())
    .addOption(new Option('--from <backend>', 'the store to copy from').choices(['sqlite', 'postgres']).makeOptionMandatory())
    .addOption(new Option('--to <backend>', 'the store to copy to').choices(['sqlite', 'postgres']).makeOptionMandatory())
    .option('--from-url <where>', "the source: a postgres:// URL, or the SQLite file (default: the config's)")
    .option('--to-url <where>', "the target: a postgres:// URL, or the SQLite file (default: the config's)")
    .option('--force', 'replace domains the target already has, with their users and aliases')
    .action(async (opts: MigrateOpts) => {
      process.stdout.write(`${await migrateStore(opts)}\n`);
    });
}
