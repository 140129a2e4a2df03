#!/usr/bin/env node
/**
 * The `yubin` command. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.
 */
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { ConfigError, DEFAULT_CONFIG_FILE, defaultConfigFile, loadConfig, resolveConfigArg, type LoadedConfig } from './config/load.js';
import { why } from './journal/why.js';
import { formatStatus, readStatus } from './status.js';
import { createLogger } from './logger.js';
import { builtinDefinitions, closePlugins, configuredDefinitions, httpServices, startPlugins, type ActivePlugin } from './plugin-loader.js';
import { CommandError, type PluginDefinition } from './plugin.js';
import type { YubinServer } from './server.js';
import { registerScaffoldCommands, SCAFFOLD_COMMANDS } from './scaffold/commands.js';
import { createServiceContainer, LocalDomains, servicesFrom } from './services/index.js';
import { formatList, queueChange, queueEntries, queueFlush, queueStat } from './queue/inspect.js';
import { WORKER_ENV } from './cluster/messages.js';
import { WorkerStartError } from './cluster/primary.js';
import { EX_CONFIG, EX_TEMPFAIL, parseSendmailArgs, sendmail, SendmailError } from './sendmail.js';

const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

function configOption(): Option {
  const fallback = defaultConfigFile();
  const described = fallback === DEFAULT_CONFIG_FILE ? 'the embedded config/yubin.yaml' : fallback ? './yubin.yaml' : 'none';
  return new Option('-c, --config <file>', 'config file, or a site directory with yubin.yaml').env('YUBIN_CONFIG').default(fallback ?? '', described);
}

/** One line per problem on stderr, then exit 2 for config problems or 1 for anything else. */
function fail(err: unknown): never {
  // By name too: a plugin package may carry its own copy of yubin-mail, whose class is another.
  if (err instanceof CommandError || (err instanceof Error && err.name === 'CommandError')) {
    process.stderr.write(`yubin: ${err.message}\n`);
    process.exit((err as CommandError).exitCode ?? EXIT_USAGE);
  }
  if (err instanceof ConfigError) {
    for (const p of err.problems) process.stderr.write(`yubin: ${p}\n`);
    process.exit(EXIT_USAGE);
  }
  process.stderr.write(`yubin: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(EXIT_RUNTIME);
}

async function serve(opts: { config: string }): Promise<void> {
  const loaded = await loadConfig(opts.config);
  const j = loaded.config.journal;
  const journal = j.enabled ? { file: path.resolve(loaded.config.dataDir, j.file), maxAgeMs: j.maxAge, maxBytes: j.maxSize } : undefined;
  const syslog = loaded.config.log.syslog;
  // A cluster worker (forked by the primary with the same arguments) carries its number on every log line.
  const worker = cluster.isWorker ? Number(process.env[WORKER_ENV]) || cluster.worker?.id : undefined;
  const log = createLogger({ level: loaded.config.logLevel, journal, syslog: syslog && { ...syslog, socket: loaded.resolvePath(syslog.socket) }, worker });
  // A fault in one session must not take the others down; it is logged and the process goes on.
  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception'));
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
  if (cluster.isWorker) return serveWorker(loaded, log);
  let server: YubinServer | undefined;
  let stopping: string | undefined;
  const stop = (signal: string) => {
    if (stopping && server) return;
    stopping = signal;
    // A signal during start-up is acted on once the server is up (it has listeners to drain by then).
    if (!server) return;
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
  process.on('SIGHUP', () => void server?.reload());
  // Loaded here, not at the top: the other commands (why, status, queue) start faster without the server's modules.
  const { YubinServer: Server } = await import('./server.js');
  const { workers } = loaded.config;
  try {
    server = await Server.start(loaded, { log, ...(workers > 1 ? { cluster: { role: 'primary', workers } } : {}) });
  } catch (err) {
    // The worker said why on stderr; the primary exits as it did (2 for a config problem).
    if (err instanceof WorkerStartError) throw new CommandError(err.message, err.exitCode);
    throw err;
  }
  log.info({ event: 'ready', ...(workers > 1 ? { workers } : {}) }, workers > 1 ? `ready, ${workers} workers` : 'ready');
  if (stopping) {
    const signal = stopping;
    stopping = undefined;
    stop(signal);
  }
}

/**
 * A cluster worker: the smtp and pop3 listeners, started and stopped by the
 * primary. Signals are the primary's to act on — a terminal's Ctrl-C reaches
 * the whole process group, and must not cut a worker's sessions before the
 * primary drains them — except a SIGTERM sent to this worker alone, which
 * drains it (the primary then starts another).
 */
async function serveWorker(loaded: LoadedConfig, log: ReturnType<typeof createLogger>): Promise<void> {
  const [{ YubinServer: Server }, { WorkerLink }] = await Promise.all([import('./server.js'), import('./cluster/worker.js')]);
  const link = new WorkerLink();
  let server: YubinServer | undefined;
  let leaving = false;
  const leave = (how: (s: YubinServer) => Promise<void>) => {
    if (leaving || !server) return;
    leaving = true;
    how(server).then(
      () => {
        log.flush?.();
        process.exit(0);
      },
      (err: Error) => {
        log.error({ err: err.message }, 'error while stopping');
        process.exit(EXIT_RUNTIME);
      },
    );
  };
  process.on('SIGINT', () => undefined);
  process.on('SIGHUP', () => undefined);
  process.on('SIGTERM', () => leave((s) => s.stop()));
  server = await Server.start(loaded, { log, cluster: { role: 'worker', link } });
  link.serve(
    {
      reload: () => server.reload(),
      stop: (timeoutMs) => leave((s) => s.stop(timeoutMs)),
      // No primary: nothing would deliver or count; what is in the spool is listed by the next primary.
      orphaned: () => leave((s) => s.close()),
    },
    server.metrics,
  );
}

/**
 * The local domains as the server sees them: the config's and those of the
 * mailbox plugins (vpopmail's virtual domains), for local/remote in `queue`
 * listings. A plugin that cannot start leaves the config's list: the queue
 * must be readable even then.
 */
async function localDomainsOf(loaded: LoadedConfig): Promise<LocalDomains> {
  const { config } = loaded;
  const log = createLogger({ level: 'error', destination: process.stderr });
  const services = servicesFrom(createServiceContainer(log, config.localDomains, config.dns));
  try {
    const plugins = await startPlugins(loaded, { services, log });
    const domains = new LocalDomains(services.localDomains.list());
    await closePlugins(plugins.instances, log);
    return domains;
  } catch {
    return new LocalDomains(config.localDomains);
  }
}

function describeListener(loaded: LoadedConfig, i: number): string[] {
  const l = loaded.config.listeners[i]!;
  const host = l.listen.host.includes(':') ? `[${l.listen.host}]` : l.listen.host;
  if (l.protocol === 'http') return [`listener ${l.name}: http on ${host}:${l.listen.port}, tls ${l.tls}`, `  serves: ${l.serve.map((s) => (s === 'metrics' ? 'metrics (GET /metrics, Prometheus text format)' : `${s} (plugin)`)).join(', ')}`];
  const lim = l.limits;
  const pop3 = l.protocol === 'pop3';
  const connections = `${lim.maxConnections} connections (${lim.maxConnectionsPerIp || 'any number'} per IP), ${lim.maxConnectionTime / 1000} s each at most`;
  const lines = [
    `listener ${l.name}: ${l.protocol} on ${host}:${l.listen.port}, tls ${l.tls}${l.requireAuth && !pop3 ? ', AUTH required' : ''}${l.allowInsecureAuth ? ', logins allowed without TLS' : ''}`,
    pop3
      ? `  limits: line ${lim.maxLineLength} octets, idle ${lim.idleTimeout / 1000} s (${lim.firstCommandTimeout / 1000} s before login), ${connections}, ${lim.maxAuthFailures} failed logins`
      : `  limits: message ${lim.maxMessageSize} bytes, ${lim.maxRecipients} recipients, line ${lim.maxLineLength} octets, idle ${lim.idleTimeout / 1000} s (${lim.firstCommandTimeout / 1000} s before HELO), ${connections}, data at least ${lim.minDataRate} bytes/s`,
  ];
  if (l.proxy) lines.push(`  proxy: PROXY header (v1 or v2) required from ${l.proxy.trusted.join(', ')} within ${l.proxy.timeout / 1000} s; other peers refused`);
  if (l.plugins.length === 0) lines.push('  plugins: none (the core still refuses relaying)');
  return lines;
}

/** `  2. rblsmtpd [built-in] hooks: connect, rcpt; options {"permanent":true}`: the options as merged for this place. */
function describePlugin(p: ActivePlugin, index: number): string {
  const name = p.definition.name === p.ref ? p.ref : `${p.ref} (${p.definition.name})`;
  const options = Object.keys(p.given).length ? `; options ${JSON.stringify(p.given)}` : '';
  return `  ${index + 1}. ${name} [${p.source}] hooks: ${p.hooks.join(', ') || 'none'}${options}`;
}

async function checkConfig(opts: { config: string }): Promise<void> {
  const loaded = await loadConfig(opts.config);
  const { config } = loaded;
  // Plugins are loaded and set up for real (rule files parsed), then closed again.
  const log = createLogger({ level: 'warn', destination: process.stderr });
  const services = servicesFrom(createServiceContainer(log, config.localDomains, config.dns));
  const plugins = await startPlugins(loaded, { services, log });
  // Each http listener's services mounted on a throwaway app, as serve mounts them: one that refuses its listener (webadmin on plain HTTP off loopback) is a config problem here too.
  const { checkServices, HttpServiceError, serviceConfigError } = await import('./http/listener.js');
  const problems: string[] = [];
  for (const l of config.listeners) {
    if (l.protocol !== 'http') continue;
    try {
      await checkServices(l, httpServices(plugins, l));
    } catch (err) {
      if (!(err instanceof HttpServiceError)) {
        await closePlugins(plugins.instances, log);
        throw err;
      }
      problems.push(...serviceConfigError(loaded, err).problems);
    }
  }
  if (problems.length) {
    await closePlugins(plugins.instances, log);
    throw new ConfigError(loaded.file, problems);
  }
  // After the plugins started: the list includes a mailbox plugin's virtual domains.
  const out = [`config ${loaded.file}: ok`, `hostname ${config.hostname}, dataDir ${config.dataDir}`, `local domains: ${services.localDomains.list().join(', ') || '(none)'}`];
  if (config.workers > 1) out.push(`workers: ${config.workers} processes run the smtp and pop3 listeners; the primary keeps the queue, the control socket and the http listeners`);
  config.listeners.forEach((l, i) => {
    out.push(...describeListener(loaded, i));
    plugins.listeners.get(l.name)?.forEach((p, j) => out.push(describePlugin(p, j)));
  });
  const { queue: q, delivery: d } = config;
  const hold = (n: number) => (n === 0 ? 'held' : String(n));
  out.push(
    `queue: concurrency local ${hold(q.concurrencyLocal)}, remote ${hold(q.concurrencyRemote)}, ${q.concurrencyPerDomain} per domain; lifetime ${q.lifetime / 1000} s; retry ${q.retry ? q.retry.map((ms) => `${ms / 1000} s`).join(', ') : "qmail's schedule"}`,
    `delivery: ${d.smarthost ? `${Object.keys(d.routes).length ? 'other' : 'all'} remote mail via ${d.smarthost.host}:${d.smarthost.port} (tls ${d.smarthost.tls}${d.smarthost.user ? ', AUTH' : ''})` : `remote mail to each domain's MX on port ${d.remotePort}`}`,
    ...Object.entries(d.routes).map(([key, r]) => `  route ${key}: ${r.host === '' ? 'its own MX' : `${r.host}:${r.port} (tls ${r.tls}${r.user ? ', AUTH' : ''})`}`),
  );
  plugins.delivery.forEach((p, j) => out.push(describePlugin(p, j)));
  if (!d.plugins.length) out.push('  no deliver plugins: local addresses bounce (5.1.1)');
  const syslog = config.log.syslog;
  if (syslog) out.push(`log: also to syslog at ${loaded.resolvePath(syslog.socket)}, facility ${syslog.facility}, tag ${syslog.tag}`);
  process.stdout.write(out.join('\n') + '\n');
  await closePlugins(plugins.instances, log);
}

/**
 * Commands of one built-in plugin, and that plugin: loading every built-in
 * costs about a second per call on a small machine (an admin's script adding
 * a hundred users, Dovecot running checkpassword for every login), and
 * mailauth's WebAssembly wants gigabytes of address space, more than a
 * Dovecot auth process allows its children. Help without a command still
 * loads them all, to list every command.
 */
const SINGLE_PLUGIN_COMMANDS: Readonly<Record<string, string>> = { checkpassword: 'vpopmail', domain: 'vpopmail', user: 'vpopmail', alias: 'vpopmail', store: 'vpopmail' };

/** What the core answers itself; anything else may be a plugin's command (or help, which lists them). */
const CORE_COMMANDS = new Set(['serve', 'check-config', 'queue', 'sendmail', 'why', 'status', ...SCAFFOLD_COMMANDS, '-V', '--version']);

/** `yubin` with the core's commands and those the plugins add (`domain`, `user`, `alias`, `dkim`...). */
export function buildProgram(plugins: ReadonlyArray<PluginDefinition<unknown>> = []): Command {
  const program = new Command('yubin')
    .description('a mail server framework: SMTP, plugins, queue')
    .version(pkg.version, '-V, --version')
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `yubin: ${s}` : s) });
  program
    .command('serve [site]')
    .description('start the server (SITE: a directory made by `yubin init`, same as -c SITE)')
    .addOption(configOption())
    .action((site: string | undefined, opts: { config: string }) => serve({ config: site ?? opts.config }));
  program
    .command('check-config [site]')
    .description('validate the config and print each listener and its plugins in order, with their options')
    .addOption(configOption())
    .action((site: string | undefined, opts: { config: string }) => checkConfig({ config: site ?? opts.config }));

  program
    .command('why <query>')
    .description('the story of a client IP, address, domain, queue id or Message-ID, from the decision journal')
    .addOption(configOption())
    .option('--since <duration>', 'only events this recent (30m, 2h, 7d)')
    .option('--json', 'the stories as JSON')
    .action(async (query: string, opts: { config: string; since?: string; json?: boolean }) => {
      const { config } = await loadConfig(opts.config);
      process.stdout.write(`${why(config, query, opts)}\n`);
    });

  program
    .command('status')
    .description('listeners and their connections, the queue, deliveries in progress, the last refusals')
    .addOption(configOption())
    .option('--json', 'one JSON object')
    .action(async (opts: { config: string; json?: boolean }) => {
      const loaded = await loadConfig(opts.config);
      const st = await readStatus(loaded.config, await localDomainsOf(loaded));
      process.stdout.write(`${opts.json ? JSON.stringify(st, null, 2) : formatStatus(st, loaded.config)}\n`);
    });

  const queue = program.command('queue').description('look at and act on the queue (works while the server runs)');
  const configOf = async (opts: { config: string }) => (await loadConfig(opts.config)).config;
  const withLocals = async (opts: { config: string }) => {
    const loaded = await loadConfig(opts.config);
    return { config: loaded.config, locals: await localDomainsOf(loaded) };
  };
  const print = (text: string): void => void process.stdout.write(text ? `${text}\n` : '');
  queue
    .command('stat')
    .description('messages in the queue and recipients pending (qmail-qstat)')
    .addOption(configOption())
    .action(async (opts: { config: string }) => {
      const { config, locals } = await withLocals(opts);
      print(await queueStat(config, locals));
    });
  queue
    .command('list')
    .description('each message: id, age, sender, recipients, next attempt, last error (qmail-qread)')
    .addOption(configOption())
    .option('--json', 'one JSON array')
    .action(async (opts: { config: string; json?: boolean }) => {
      const { config, locals } = await withLocals(opts);
      const entries = await queueEntries(config, locals);
      print(opts.json ? JSON.stringify(entries, null, 2) : formatList(entries));
    });
  queue
    .command('flush')
    .description('try every queued message now')
    .addOption(configOption())
    .action(async (opts: { config: string }) => print(await queueFlush(await configOf(opts))));
  for (const cmd of ['delete', 'bounce'] as const) {
    queue
      .command(`${cmd} <id>`)
      .description(cmd === 'delete' ? 'remove a message without telling anyone' : 'give up on a message: its pending recipients bounce to the sender')
      .addOption(configOption())
      .action(async (id: string, opts: { config: string }) => print(await queueChange(await configOf(opts), cmd, id)));
  }
  registerScaffoldCommands(program);
  for (const plugin of plugins) plugin.commands?.({ program, configOption });
  program
    .command('sendmail')
    .description('sendmail-compatible injection: yubin sendmail [-t] [-i] [-f sender] [-F name] [recipient...] < message')
    .allowUnknownOption()
    .helpOption(false);
  return program;
}

/**
 * The plugins the config names that are not built in (a site's local files and
 * npm packages), so their commands are there too. The config is the one the
 * command line names (-c FILE, --config FILE, --config=FILE), YUBIN_CONFIG or
 * the default; a config that does not load leaves just the built-ins' commands
 * (the command itself reports the problem when it reads the config).
 */
async function installedDefinitions(argv: readonly string[]): Promise<Array<PluginDefinition<unknown>>> {
  let file = process.env.YUBIN_CONFIG ?? defaultConfigFile();
  argv.forEach((a, i) => {
    if ((a === '-c' || a === '--config') && argv[i + 1]) file = argv[i + 1]!;
    else if (a.startsWith('--config=')) file = a.slice('--config='.length);
  });
  if (!file) return [];
  try {
    return await configuredDefinitions(await loadConfig(resolveConfigArg(file)), (m) => process.stderr.write(`yubin: ${m}\n`));
  } catch {
    return [];
  }
}

/** sendmail's own argument conventions (-oi, -fADDR) are not commander's: parsed apart. */
async function runSendmail(args: string[]): Promise<never> {
  try {
    const parsed = parseSendmailArgs(args);
    let loaded: LoadedConfig;
    try {
      loaded = await loadConfig(parsed.config ?? process.env.YUBIN_CONFIG ?? defaultConfigFile() ?? '');
    } catch (err) {
      if (err instanceof ConfigError) for (const p of err.problems) process.stderr.write(`sendmail: ${p}\n`);
      else process.stderr.write(`sendmail: ${(err as Error).message}\n`);
      process.exit(EX_CONFIG);
    }
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    await sendmail(loaded.config, parsed, Buffer.concat(chunks));
    process.exit(0);
  } catch (err) {
    process.stderr.write(`sendmail: ${(err as Error).message}\n`);
    process.exit(err instanceof SendmailError ? err.exitCode : EX_TEMPFAIL);
  }
}

async function main(argv: string[]): Promise<void> {
  // Installed as /usr/sbin/sendmail (a symlink to yubin), or called as `yubin sendmail`.
  if (path.basename(argv[1] ?? '') === 'sendmail') await runSendmail(argv.slice(2));
  if (argv[2] === 'sendmail') await runSendmail(argv.slice(3));
  // The plugins' commands need every built-in loaded (a second on a small machine): not for the core's own.
  const single = SINGLE_PLUGIN_COMMANDS[argv[2] ?? ''];
  const plugins = CORE_COMMANDS.has(argv[2] ?? '') ? [] : single ? await builtinDefinitions([single]) : [...(await builtinDefinitions()), ...(await installedDefinitions(argv))];
  const program = buildProgram(plugins);
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
