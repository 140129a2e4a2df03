/**
 * `yubin admin add|remove|list|token|revoke`: server admins beyond the
 * config's `admins` list, and API tokens. They write the plugin's SQLite
 * file; the running server reads it at each request.
 */
import type { Command, Option } from 'commander';
import { CommandError, commandOptions, loadConfig } from '../../core/index.js';
import { parseAddress } from '../vpopmail/names.js';
import { AdminDb } from './admin-db.js';
import { databasePath, webadminOptions, type WebadminOptions } from './options.js';

const usage = (message: string): never => {
  throw new CommandError(message);
};

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

async function withDb<T>(configFile: string, fn: (db: AdminDb, options: WebadminOptions) => T): Promise<T> {
  const { config } = await loadConfig(configFile);
  const parsed = webadminOptions.safeParse(commandOptions(config, 'webadmin'));
  if (!parsed.success) usage(`plugins.webadmin: ${parsed.error.issues[0]?.message ?? 'invalid options'}`);
  const db = new AdminDb(databasePath(parsed.data!, config.dataDir));
  try {
    return fn(db, parsed.data!);
  } finally {
    db.close();
  }
}

function addressArg(text: string): string {
  const a = parseAddress(text);
  return a ? `${a.name}@${a.domain}` : usage(`invalid address: ${text} (expected user@domain)`);
}

export function registerAdminCommands(program: Command, configOption: () => Option): void {
  const admin = program.command('admin').description('webadmin: server admins and API tokens');

  admin
    .command('add <address>')
    .description('make ADDRESS (a vpopmail user) a server admin of the web pages')
    .addOption(configOption())
    .action(async (address: string, opts: { config: string }) => {
      const a = addressArg(address);
      await withDb(opts.config, (db) => out(db.addAdmin(a) ? `${a} is a server admin` : `${a} is already a server admin`));
    });

  admin
    .command('remove <address>')
    .description('take server admin away from ADDRESS (its API tokens then act with its remaining role)')
    .addOption(configOption())
    .action(async (address: string, opts: { config: string }) => {
      const a = addressArg(address);
      await withDb(opts.config, (db, options) => {
        const removed = db.removeAdmin(a);
        if (options.admins.includes(a)) return out(`${a} is still a server admin: it is listed in plugins.webadmin.admins of the config`);
        out(removed ? `${a} is no longer a server admin` : `${a} was not a server admin added with yubin admin add`);
      });
    });

  admin
    .command('list')
    .description('server admins (config and added) and API tokens')
    .addOption(configOption())
    .option('--json', 'as JSON')
    .action(async (opts: { config: string; json?: boolean }) => {
      await withDb(opts.config, (db, options) => {
        const admins = [...options.admins.map((address) => ({ address, from: 'config' })), ...db.admins().map((address) => ({ address, from: 'yubin admin add' }))];
        const tokens = db.tokens().map((t) => ({ name: t.name, address: t.address, created: new Date(t.created).toISOString() }));
        if (opts.json) return out(JSON.stringify({ admins, tokens }, null, 2));
        out(
          [
            'server admins:',
            ...(admins.length ? admins.map((a) => `  ${a.address}  (${a.from})`) : ['  none']),
            'API tokens:',
            ...(tokens.length ? tokens.map((t) => `  ${t.name}  ${t.address}  ${t.created}`) : ['  none']),
          ].join('\n'),
        );
      });
    });

  admin
    .command('token <address>')
    .description('make an API token acting as ADDRESS with its role (Authorization: Bearer TOKEN); printed once')
    .addOption(configOption())
    .option('--name <name>', 'a name to revoke it by (default: ADDRESS and the date)')
    .action(async (address: string, opts: { config: string; name?: string }) => {
      const a = addressArg(address);
      const name = opts.name ?? `${a}-${new Date().toISOString().slice(0, 19).replace(/[-:]/g, '')}`;
      if (!/^[A-Za-z0-9@._+-]{1,100}$/.test(name)) usage(`invalid --name: ${name} (letters, digits and @ . _ + -)`);
      await withDb(opts.config, (db) => {
        const token = db.createToken(a, name) ?? usage(`a token named ${name} exists: revoke it or choose another --name`);
        process.stderr.write(`token ${name} for ${a}; it is shown only now, keep it safe:\n`);
        out(token);
      });
    });

  admin
    .command('revoke <name>')
    .description('revoke the API token NAME')
    .addOption(configOption())
    .action(async (name: string, opts: { config: string }) => {
      await withDb(opts.config, (db) => (db.revokeToken(name) ? out(`token ${name} revoked`) : usage(`no token named ${name}`)));
    });
}
