/**
 * yubin/testing: start a real server on an ephemeral loopback port with the
 * plugins you name, talk SMTP to it, look at what it queued.
 *
 *     import { startTestServer } from 'yubin-mail/testing';
 *     const server = await startTestServer({ plugins: [myPlugin, 'rcpthosts'] });
 *     const client = await server.connect();
 *     await client.ehlo();
 *     const r = await client.mail({ from: 'a@example.net', to: 'postmaster@localhost', data: 'Subject: hi\n\nhello\n' });
 *     await server.close();
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { DependencyContainer } from 'tsyringe';
import { stringify } from 'yaml';
import { parseConfig } from '../config/load.js';
import { createLogger, type Logger } from '../logger.js';
import type { PluginDefinition } from '../plugin.js';
import { YubinServer } from '../server.js';
import type { Envelope } from '../queue/spool.js';
import { SmtpTestClient, type ConnectOptions } from './smtp-client.js';

export { Pop3TestClient, type Pop3ConnectOptions, type Pop3Multiline } from './pop3-client.js';
export { SmtpTestClient, toWire, type ConnectOptions, type MailOptions, type MailResult, type SmtpReply } from './smtp-client.js';

/** A plugin named in a listener: by reference (built-in name, path, package) or given as a definition. */
export type PluginRef = string | PluginDefinition<unknown>;

/**
 * A plugins list entry, as in the config file: a plugin alone, a one-key map
 * `{ rblsmtpd: { permanent: true } }`, or `[definitionOrName, options]`; the
 * options are merged over `pluginOptions[NAME]` for this listener only.
 */
export type PluginEntry = PluginRef | Readonly<Record<string, Readonly<Record<string, unknown>>>> | readonly [PluginRef, Readonly<Record<string, unknown>>];

export interface TestListener {
  readonly name?: string;
  readonly plugins?: readonly PluginEntry[];
  /** An http listener's services: `metrics` and plugins serving HTTP, by reference or as definitions. */
  readonly serve?: readonly PluginRef[];
  /** Any other listener keys (tls, requireAuth, limits...) as in the config file. */
  readonly [key: string]: unknown;
}

export interface TestServerOptions {
  /** Plugins of the single listener (ignored when `listeners` is given). */
  readonly plugins?: readonly PluginEntry[];
  /** Plugins of `delivery.plugins` (deliver and verify hooks), by reference or as definitions; overrides `config.delivery.plugins`. */
  readonly deliveryPlugins?: readonly PluginEntry[];
  /**
   * The top-level `plugins:` blocks, keyed as the lists name the plugins, as in
   * the config file (a definition by its `name`). A block no list uses fails
   * the start, as in the config file.
   */
  readonly pluginOptions?: Readonly<Record<string, unknown>>;
  /** Extra keys for the single listener (limits, tls, requireAuth...). */
  readonly listener?: Omit<TestListener, 'plugins'>;
  /** Several listeners; each gets an ephemeral port. */
  readonly listeners?: readonly TestListener[];
  /** Other top-level config keys (hostname, localDomains, hookTimeout...). */
  readonly config?: Readonly<Record<string, unknown>>;
  /** Where the config file is taken to live (relative plugin and file paths resolve from here). */
  readonly configDir?: string;
  /** Replace services (clock, DNS) before the server starts. */
  readonly configure?: (container: DependencyContainer) => void;
  /**
   * Run the queue: deliver what is accepted (local through `delivery.plugins`,
   * remote over SMTP). Off by default, so a test can look at what was queued
   * with `queued()`; `config.queue` given explicitly also decides.
   */
  readonly deliver?: boolean;
  /** Use this data directory (and keep it at close) instead of a fresh temporary one: a restart test. */
  readonly dataDir?: string;
  /** Where logs go; by default nowhere, or stderr when YUBIN_TEST_LOG is set. */
  readonly log?: Logger;
}

export interface QueuedMessage {
  readonly envelope: Envelope;
  /** The message as stored, with the headers the server added. */
  readonly text: string;
}

export interface TestServer {
  readonly server: YubinServer;
  /** Port of the first listener. */
  readonly port: number;
  /** Port of every listener by name. */
  readonly ports: Readonly<Record<string, number>>;
  readonly dataDir: string;
  /** The JSON log lines written so far. */
  readonly logs: ReadonlyArray<Record<string, unknown>>;
  connect(options?: ConnectOptions & { listener?: string }): Promise<SmtpTestClient>;
  /** Committed messages, oldest first. */
  queued(): Promise<QueuedMessage[]>;
  close(): Promise<void>;
}

function refName(ref: PluginRef): string {
  return typeof ref === 'string' ? ref : ref.name;
}

function isDefinition(v: unknown): v is PluginDefinition<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { setup?: unknown }).setup === 'function';
}

/** An entry as the config file writes it; definitions are remembered to be given to the server inline. */
function configEntry(entry: PluginEntry, inline: Map<string, PluginDefinition<unknown>>): string | Record<string, unknown> {
  if (Array.isArray(entry)) {
    const [ref, options] = entry as readonly [PluginRef, Readonly<Record<string, unknown>>];
    if (isDefinition(ref)) inline.set(ref.name, ref);
    return { [refName(ref)]: options };
  }
  if (isDefinition(entry)) {
    inline.set(entry.name, entry);
    return entry.name;
  }
  return entry as string | Record<string, unknown>;
}

export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'yubin-test-')));
  const listeners: TestListener[] = options.listeners ? [...options.listeners] : [{ name: 'smtp', ...options.listener, plugins: options.plugins ?? [] }];
  const inline = new Map<string, PluginDefinition<unknown>>();
  const rawListeners = listeners.map((l, i) => {
    const { plugins = [], serve, ...rest } = l;
    const raw = { name: `l${i}`, protocol: 'smtp', listen: '127.0.0.1:0', ...rest };
    // An http listener (protocol: http, serve: [metrics, webadmin]) has services instead of plugins.
    if (raw.protocol === 'http') return { ...raw, ...(serve ? { serve: serve.map((p) => configEntry(p, inline)) } : {}) };
    return { ...raw, plugins: plugins.map((p) => configEntry(p, inline)) };
  });
  const config: Record<string, unknown> = { ...options.config };
  if (options.deliveryPlugins) config.delivery = { ...(config.delivery as object | undefined), plugins: options.deliveryPlugins.map((p) => configEntry(p, inline)) };
  const raw = {
    hostname: 'mx.test',
    localDomains: ['localhost', 'example.test'],
    // Concurrency 0 holds the queue (qmail's meaning): accepted mail stays where queued() finds it.
    ...(options.deliver ? {} : { queue: { concurrencyLocal: 0, concurrencyRemote: 0 } }),
    ...config,
    dataDir,
    plugins: options.pluginOptions ?? {},
    listeners: rawListeners,
  };
  const configFile = path.join(options.configDir ?? dataDir, 'yubin.test.yaml');
  const loaded = parseConfig(stringify(raw), configFile);

  const logs: Array<Record<string, unknown>> = [];
  const capture = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      if (process.env.YUBIN_TEST_LOG) process.stderr.write(chunk);
      cb();
    },
  });
  const log = options.log ?? createLogger({ level: 'debug', destination: capture, format: 'json' });
  const server = await YubinServer.start(loaded, { log, configure: options.configure, inlinePlugins: inline });
  const addresses = server.addresses();
  const ports = Object.fromEntries(Object.entries(addresses).map(([n, a]) => [n, a.port]));
  const first = rawListeners[0]!.name;
  const clients = new Set<SmtpTestClient>();

  return {
    server,
    port: ports[first]!,
    ports,
    dataDir,
    logs,
    async connect(opts = {}) {
      const port = ports[opts.listener ?? first];
      if (port === undefined) throw new Error(`no listener ${opts.listener}`);
      const client = await SmtpTestClient.connect(port, opts);
      clients.add(client);
      return client;
    },
    async queued() {
      const out: QueuedMessage[] = [];
      for (const id of await server.spool.list()) {
        const envelope = await server.spool.readEnvelope(id);
        const chunks: Buffer[] = [];
        for await (const c of await server.spool.openMessage(id)) chunks.push(c as Buffer);
        out.push({ envelope, text: Buffer.concat(chunks).toString() });
      }
      return out;
    },
    async close() {
      for (const c of clients) c.close();
      await server.close();
      if (!options.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
