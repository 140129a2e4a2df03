#!/usr/bin/env node
/**
 * The `yubin` command. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { ConfigError, DEFAULT_CONFIG_FILE, loadConfig, type LoadedConfig } from './config/load.js';
import { createLogger } from './logger.js';
import { closePlugins, startPlugins, unusedOptionBlocks } from './plugin-loader.js';
import { YubinServer } from './server.js';
import { createServiceContainer, servicesFrom } from './services/index.js';

const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

function configOption(): Option {
  return new Option('-c, --config <file>', 'config file').env('YUBIN_CONFIG').default(DEFAULT_CONFIG_FILE, 'the embedded config/yubin.yaml');
}

/** One line per problem on stderr, then exit 2 for config problems or 1 for anything else. */
function fail(err: unknown): never {
  if (err instanceof ConfigError) {
    for (const p of err.problems) process.stderr.write(`yubin: ${p}\n`);
    process.exit(EXIT_USAGE);
  }
  process.stderr.write(`yubin: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(EXIT_RUNTIME);
}

async function serve(opts: { config: string }): Promise<void> {
  const loaded = await loadConfig(opts.config);
  const log = createLogger({ level: loaded.config.logLevel });
  const server = await YubinServer.start(loaded, { log });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ event: 'stop', signal }, `${signal}: finishing transactions in progress, then exiting`);
    server.stop().then(
      () => {
        log.info({ event: 'stopped' }, 'stopped');
        log.flush?.();
        process.exit(0);
      },
      (err: Error) => {
        log.error({ err: err.message }, 'error while stopping');
        process.exit(EXIT_RUNTIME);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => void server.reload());
  // A fault in one session must not take the others down; it is logged and the process goes on.
  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception'));
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
}

function describeListener(loaded: LoadedConfig, i: number): string[] {
  const l = loaded.config.listeners[i]!;
  const host = l.listen.host.includes(':') ? `[${l.listen.host}]` : l.listen.host;
  const lim = l.limits;
  const lines = [
    `listener ${l.name}: ${l.protocol} on ${host}:${l.listen.port}, tls ${l.tls}${l.requireAuth ? ', AUTH required' : ''}${l.allowInsecureAuth ? ', AUTH allowed without TLS' : ''}`,
    `  limits: message ${lim.maxMessageSize} bytes, ${lim.maxRecipients} recipients, line ${lim.maxLineLength} octets, idle ${lim.idleTimeout / 1000} s, ${lim.maxConnections} connections`,
  ];
  if (l.plugins.length === 0) lines.push('  plugins: none (the core still refuses relaying)');
  return lines;
}

async function checkConfig(opts: { config: string }): Promise<void> {
  const loaded = await loadConfig(opts.config);
  const { config } = loaded;
  // Plugins are loaded and set up for real (rule files parsed), then closed again.
  const log = createLogger({ level: 'warn', destination: process.stderr });
  const services = servicesFrom(createServiceContainer(log, config.localDomains));
  const plugins = await startPlugins(loaded, { services, log });
  const out = [`config ${loaded.file}: ok`, `hostname ${config.hostname}, dataDir ${config.dataDir}`, `local domains: ${config.localDomains.join(', ') || '(none)'}`];
  config.listeners.forEach((l, i) => {
    out.push(...describeListener(loaded, i));
    l.plugins.forEach((ref, j) => {
      const p = plugins.get(ref)!;
      const name = p.definition.name === ref ? ref : `${ref} (${p.definition.name})`;
      out.push(`  ${j + 1}. ${name} [${p.source}] hooks: ${p.hooks.join(', ') || 'none'}`);
    });
  });
  for (const key of unusedOptionBlocks(loaded)) out.push(`warning: options for plugin ${key}, which no listener uses`);
  process.stdout.write(out.join('\n') + '\n');
  await closePlugins(plugins.values(), log);
}

export function buildProgram(): Command {
  const program = new Command('yubin')
    .description('a mail server framework: SMTP, plugins, queue')
    .version(pkg.version, '-V, --version')
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `yubin: ${s}` : s) });
  program.command('serve').description('start the server').addOption(configOption()).action(serve);
  program.command('check-config').description('validate the config and print each listener and its plugins in order').addOption(configOption()).action(checkConfig);
  return program;
}

async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version are successes; everything else commander rejects is a usage error
      process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
    }
    fail(err);
  }
}

await main(process.argv);
