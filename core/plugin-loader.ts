/**
 * Finds, validates and starts the plugins a config names. A plugin is named
 * by built-in name (plugins/NAME/), by path relative to the config file, or
 * by npm package name; its options block is checked against its schema
 * before anything runs, and every problem names the key it comes from.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Logger } from 'pino';
import { ConfigError, formatKeyPath, issuePath, type LoadedConfig } from './config/load.js';
import type { HookName } from './hooks.js';
import { HOOK_NAMES } from './hooks.js';
import type { HttpService, PluginDefinition, PluginInstance } from './plugin.js';
import type { Services } from './services/index.js';
import { isBuiltinHttpService, type HttpListenerConfig, type PluginUse } from './config/schema.js';
import { isPlainMap, mergeOptions } from './config/plugin-options.js';

const ownUrl = import.meta.url;
/** dist/plugins/: the built-ins are found there by name at run time; core/ has no static dependency on them. */
const BUILTIN_DIR = fileURLToPath(new URL('../plugins/', ownUrl));

export type PluginSource = 'built-in' | 'path' | 'package' | 'inline';

export interface ActivePlugin {
  /** As the config names it. */
  readonly ref: string;
  readonly source: PluginSource;
  readonly definition: PluginDefinition<unknown>;
  readonly instance: PluginInstance;
  readonly hooks: readonly HookName[];
  /** The options as written: the top-level block with this place's merged over it. */
  readonly given: Readonly<Record<string, unknown>>;
}

export function builtinPlugins(): string[] {
  return readdirSync(BUILTIN_DIR, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(path.join(BUILTIN_DIR, d.name, 'index.js')))
    .map((d) => d.name)
    .sort();
}

function isPath(ref: string): boolean {
  return ref.startsWith('./') || ref.startsWith('../') || path.isAbsolute(ref);
}

/** Where a reference points, or undefined when it points nowhere. */
export function resolvePlugin(ref: string, configFile: string): { source: PluginSource; url: string } | undefined {
  if (isPath(ref)) {
    const file = path.resolve(path.dirname(configFile), ref);
    return existsSync(file) ? { source: 'path', url: pathToFileURL(file).href } : undefined;
  }
  if (/^[a-z0-9][a-z0-9_-]*$/.test(ref)) {
    const file = path.join(BUILTIN_DIR, ref, 'index.js');
    if (existsSync(file)) return { source: 'built-in', url: pathToFileURL(file).href };
  }
  // An npm package: looked up from the config file's directory first (a site's own
  // node_modules), then from yubin's own.
  for (const base of [configFile, fileURLToPath(import.meta.url)]) {
    try {
      return { source: 'package', url: pathToFileURL(createRequire(base).resolve(ref)).href };
    } catch {
      // try the next place
    }
  }
  return undefined;
}

/**
 * Every built-in plugin's definition (for the commands they add to `yubin`).
 * One that fails to load is left out: its commands are missing, the others work.
 */
export async function builtinDefinitions(only?: readonly string[]): Promise<Array<PluginDefinition<unknown>>> {
  const out: Array<PluginDefinition<unknown>> = [];
  for (const name of only ?? builtinPlugins()) {
    const mod = (await import(pathToFileURL(path.join(BUILTIN_DIR, name, 'index.js')).href).catch(() => ({}))) as { default?: unknown };
    if (!checkDefinition(mod.default)) out.push(mod.default as PluginDefinition<unknown>);
  }
  return out;
}

/**
 * The definitions of the plugins a config names that are not built in (local
 * files, installed packages), for the commands they add to `yubin`. One that
 * does not load is reported through `warn` and left out.
 */
export async function configuredDefinitions(loaded: LoadedConfig, warn: (message: string) => void): Promise<Array<PluginDefinition<unknown>>> {
  const out: Array<PluginDefinition<unknown>> = [];
  const refs = new Set(placesOf(loaded.config).map((p) => p.use.ref));
  for (const ref of refs) {
    if (resolvePlugin(ref, loaded.file)?.source === 'built-in') continue;
    const found = await loadDefinition(ref, loaded.file, new Map());
    if (typeof found === 'string') warn(found);
    else out.push(found.definition);
  }
  return out;
}

function checkDefinition(value: unknown, mod: object = {}): string | undefined {
  // A CommonJS build reaches import() as { default: module.exports }: its own `default` sits one level down.
  const inner = (value as { default?: unknown } | null)?.default;
  if ((typeof inner === 'object' && inner !== null && 'setup' in inner) || (value as { __esModule?: unknown } | null)?.__esModule) {
    return 'a CommonJS build: yubin plugins are ES modules (package.json "type": "module", tsconfig "module": "NodeNext"), with the definition as the default export';
  }
  if (typeof value !== 'object' || value === null) {
    return Object.keys(mod).length ? `no default export (it exports ${Object.keys(mod).join(', ')}): export the definition as default` : 'the module has no default export with a plugin definition';
  }
  const d = value as Record<string, unknown>;
  if (typeof d.name !== 'string' || !d.name) return 'the definition has no name';
  if (typeof d.setup !== 'function') return 'the definition has no setup function';
  if (d.options !== undefined && typeof (d.options as { safeParse?: unknown }).safeParse !== 'function') return 'options is not a schema (needs safeParse)';
  for (const k of ['after', 'before'] as const) {
    if (d[k] !== undefined && !(Array.isArray(d[k]) && (d[k] as unknown[]).every((n) => typeof n === 'string'))) return `${k} must be a list of plugin names`;
  }
  return undefined;
}

export interface PluginEnvBase {
  readonly services: Services;
  readonly log: Logger;
}

/** Where a plugin is named: a listener's list or `delivery.plugins`, and the entry's place in it. */
export interface PluginPlace {
  /** The listener's name; undefined for `delivery.plugins`. */
  readonly listener: string | undefined;
  readonly keyPath: ReadonlyArray<string | number>;
}

/** The plugins of one config load: each distinct (plugin, effective options) set up once. */
export interface StartedPlugins {
  /** Every instance, each once. */
  readonly instances: readonly ActivePlugin[];
  /** Each listener's plugins, in its order. */
  readonly listeners: ReadonlyMap<string, readonly ActivePlugin[]>;
  /** `delivery.plugins`, in order. */
  readonly delivery: readonly ActivePlugin[];
}

/** JSON with sorted keys: equal options give equal text, whatever order they were written in. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (isPlainMap(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  return JSON.stringify(v) ?? 'null';
}

/** Every place a plugin is named, listeners first, in file order. */
function placesOf(config: LoadedConfig['config']): Array<{ place: PluginPlace; use: PluginUse }> {
  const out: Array<{ place: PluginPlace; use: PluginUse }> = [];
  config.listeners.forEach((l, i) => {
    if (l.protocol !== 'http') return l.plugins.forEach((use, j) => out.push({ place: { listener: l.name, keyPath: ['listeners', i, 'plugins', j] }, use }));
    // An http listener's services other than its own (metrics) are plugins, with their options from plugins.NAME only.
    l.serve.forEach((ref, j) => {
      if (!isBuiltinHttpService(ref)) out.push({ place: { listener: l.name, keyPath: ['listeners', i, 'serve', j] }, use: { ref, options: undefined } });
    });
  });
  config.delivery.plugins.forEach((use, j) => out.push({ place: { listener: undefined, keyPath: ['delivery', 'plugins', j] }, use }));
  return out;
}

/**
 * The first frame of a load error that is in a file, as `file:line`: a
 * syntax error names its place on the first line of its stack, a throw at the
 * module's top level in its first frame.
 */
function errorLocation(err: unknown): string | undefined {
  const stack = err instanceof Error ? (err.stack ?? '') : '';
  const m = /^(file:\/\/\S+?):(\d+)\s*$/m.exec(stack) ?? /\(?(file:\/\/[^\s()]+?):(\d+):\d+\)?/.exec(stack);
  if (!m) return undefined;
  let file = m[1]!;
  try {
    file = fileURLToPath(file);
  } catch {
    // keep the URL
  }
  return `${file}:${m[2]}`;
}

/**
 * Node 20 gives a syntax error met by import() no location: `node --check`
 * on the plugin's file finds it (a syntax error in a file the plugin imports
 * is left at the plugin's name). Run only when loading already failed.
 */
function syntaxLocation(file: string): string | undefined {
  const r = spawnSync(process.execPath, ['--check', file], { encoding: 'utf8', timeout: 10_000 });
  const m = /^(.+):(\d+)$/m.exec(r.stderr ?? '');
  return m ? `${m[1]}:${m[2]}` : undefined;
}

/**
 * Loads every plugin the listeners and the delivery name, validates each
 * place's options (the top-level block with the entry's merged over it),
 * checks the declared order and sets up one instance per distinct
 * (plugin, options). All problems are collected and thrown together as one ConfigError.
 */
export async function startPlugins(loaded: LoadedConfig, base: PluginEnvBase, inline: ReadonlyMap<string, PluginDefinition<unknown>> = new Map()): Promise<StartedPlugins> {
  const { config } = loaded;
  const problems: string[] = [];
  const at = (keyPath: ReadonlyArray<string | number>) => `${loaded.locate(keyPath)}: ${formatKeyPath(keyPath, config)}`;
  const places = placesOf(config);

  // Each module once, however many places name it.
  const definitions = new Map<string, { definition: PluginDefinition<unknown>; source: PluginSource } | undefined>();
  for (const { place, use } of places) {
    if (definitions.has(use.ref)) continue;
    const found = await loadDefinition(use.ref, loaded.file, inline);
    if (typeof found === 'string') problems.push(`${at(place.keyPath)}: ${found}`);
    definitions.set(use.ref, typeof found === 'string' ? undefined : found);
  }
  problems.push(...unusedOptionBlocks(loaded, definitions));

  const instances = new Map<string, ActivePlugin | undefined>();
  const listeners = new Map<string, ActivePlugin[]>(config.listeners.map((l) => [l.name, []]));
  const delivery: ActivePlugin[] = [];
  for (const { place, use } of places) {
    const def = definitions.get(use.ref);
    if (!def) continue;
    const given = mergeOptions((config.plugins[use.ref] ?? {}) as Record<string, unknown>, use.options ?? {});
    const key = `${use.ref}\0${canonical(given)}`;
    if (!instances.has(key)) instances.set(key, await startInstance(loaded, base, use, place, def, given, problems));
    const active = instances.get(key);
    if (!active) continue;
    if (place.listener === undefined) delivery.push(active);
    else listeners.get(place.listener)!.push(active);
  }
  for (const [i, l] of config.listeners.entries()) {
    if (l.protocol !== 'http') problems.push(...orderProblems(listeners.get(l.name)!, (j) => at(['listeners', i, 'plugins', j])));
    else problems.push(...httpProblems(l, listeners.get(l.name)!, (j) => at(['listeners', i, 'serve', j])));
  }
  problems.push(...orderProblems(delivery, (j) => at(['delivery', 'plugins', j])));

  const started = [...instances.values()].filter((p): p is ActivePlugin => p !== undefined);
  if (problems.length) {
    await closePlugins(started, base.log);
    throw new ConfigError(loaded.file, problems);
  }
  return { instances: started, listeners, delivery };
}

/** The definition a reference names, or a problem in words. */
async function loadDefinition(ref: string, configFile: string, inline: ReadonlyMap<string, PluginDefinition<unknown>>): Promise<{ definition: PluginDefinition<unknown>; source: PluginSource } | string> {
  const given = inline.get(ref);
  if (given) return { definition: given, source: 'inline' };
  const found = resolvePlugin(ref, configFile);
  if (!found) return `unknown plugin "${ref}": not a built-in (${builtinPlugins().join(', ')}), not a file, not an installed package`;
  let mod: { default?: unknown };
  try {
    mod = (await import(found.url)) as { default?: unknown };
  } catch (err) {
    const where = errorLocation(err) ?? (err instanceof SyntaxError ? syntaxLocation(fileURLToPath(found.url)) : undefined);
    return `plugin "${ref}" failed to load${where ? ` at ${where}` : ''}: ${(err as Error).message.split('\n')[0]}`;
  }
  const bad = checkDefinition(mod.default, mod);
  if (bad) return `plugin "${ref}" (${fileURLToPath(found.url)}): ${bad}`;
  return { definition: mod.default as PluginDefinition<unknown>, source: found.source };
}

/** Validates one place's options and runs setup; undefined (and a problem) when either fails. */
async function startInstance(
  loaded: LoadedConfig,
  base: PluginEnvBase,
  use: PluginUse,
  place: PluginPlace,
  def: { definition: PluginDefinition<unknown>; source: PluginSource },
  given: Record<string, unknown>,
  problems: string[],
): Promise<ActivePlugin | undefined> {
  const { config } = loaded;
  const { definition, source } = def;
  let options: unknown = given;
  if (definition.options) {
    const result = definition.options.safeParse(given);
    if (!result.success) {
      for (const issue of result.error.issues) {
        const inner = issuePath(issue);
        // The key is blamed where it was written: this entry's options, else the top-level block.
        const inEntry = use.options !== undefined && (inner.length === 0 || hasPath(use.options, inner));
        const key = inEntry || config.plugins[use.ref] === undefined ? [...place.keyPath, ...(use.options ? [use.ref] : []), ...inner] : ['plugins', use.ref, ...inner];
        // Blamed on the entry itself (no options written anywhere): say whose options are missing.
        const whose = key.length === place.keyPath.length ? `options of ${use.ref}: ` : '';
        problems.push(`${loaded.locate(key)}: ${formatKeyPath(key, config)}: ${whose}${issue.message}`);
      }
      return undefined;
    }
    options = result.data;
  }
  try {
    const instance = await definition.setup({
      options,
      log: base.log.child({ plugin: definition.name }),
      services: base.services,
      hostname: config.hostname,
      dataDir: config.dataDir,
      resolvePath: loaded.resolvePath,
      config,
    });
    const hooks = HOOK_NAMES.filter((h) => typeof instance?.hooks?.[h] === 'function');
    return { ref: use.ref, source, definition, instance, hooks, given };
  } catch (err) {
    problems.push(`${loaded.locate(place.keyPath)}: ${formatKeyPath(place.keyPath, config)}: plugin ${use.ref} could not start: ${(err as Error).message}`);
    return undefined;
  }
}

function hasPath(obj: unknown, keyPath: readonly PropertyKey[]): boolean {
  let node = obj;
  for (const k of keyPath) {
    if (typeof node !== 'object' || node === null || !(String(k) in node)) return false;
    node = (node as Record<string, unknown>)[String(k)];
  }
  return true;
}

/** The HTTP services an http listener mounts: the plugins its `serve` names, in its order. */
export function httpServices(plugins: StartedPlugins, l: HttpListenerConfig): Array<{ name: string; http: HttpService }> {
  return (plugins.listeners.get(l.name) ?? []).flatMap((p) => (p.instance.http ? [{ name: p.ref, http: p.instance.http }] : []));
}

/** A plugin named in an http listener's `serve` must offer an HTTP service. */
function httpProblems(l: HttpListenerConfig, served: readonly ActivePlugin[], at: (index: number) => string): string[] {
  return served
    .filter((p) => !p.instance.http)
    .map((p) => `${at(l.serve.indexOf(p.ref))}: plugin ${p.ref} serves no HTTP (it has no http routes): serve lists metrics or plugins such as webadmin`);
}

/**
 * A list that breaks a plugin's declared order (`after`, `before`): one
 * problem per pair, at the entry that is out of place.
 */
function orderProblems(list: readonly ActivePlugin[], at: (index: number) => string): string[] {
  const out: string[] = [];
  list.forEach((p, i) => {
    list.forEach((q, j) => {
      const name = p.definition.name;
      const other = q.definition.name;
      if (j > i && p.definition.after?.includes(other)) out.push(`${at(i)}: ${name} must come after ${other} (${name} declares after: [${other}]), but ${other} is at position ${j + 1}`);
      if (j < i && p.definition.before?.includes(other)) out.push(`${at(i)}: ${name} must come before ${other} (${name} declares before: [${other}]), but ${other} is at position ${j + 1}`);
    });
  });
  return out;
}
export async function closePlugins(plugins: Iterable<ActivePlugin>, log: Logger): Promise<void> {
  for (const p of plugins) {
    try {
      await p.instance.close?.();
    } catch (err) {
      log.warn({ plugin: p.definition.name, err: (err as Error).message }, 'plugin close failed');
    }
  }
}

/**
 * Options blocks no list names: a typo in a plugin's name, or a block keyed
 * by the definition's name instead of the name the list uses. An error, so a
 * plugin never runs on its defaults by mistake.
 */
function unusedOptionBlocks(loaded: LoadedConfig, definitions: ReadonlyMap<string, { definition: PluginDefinition<unknown> } | undefined> = new Map()): string[] {
  const used = new Set(placesOf(loaded.config).map((p) => p.use.ref));
  return Object.keys(loaded.config.plugins)
    .filter((k) => !used.has(k))
    .map((k) => {
      const named = [...definitions].find(([, d]) => d?.definition.name === k)?.[0];
      const hint = named ? ` (the lists name it "${named}": key its options by that)` : '';
      return `${loaded.locate(['plugins', k])}: plugins.${k}: options for a plugin no listener or delivery lists${hint}`;
    });
}
