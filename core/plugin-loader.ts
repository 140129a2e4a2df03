/**
 * Finds, validates and starts the plugins a config names. A plugin is named
 * by built-in name (plugins/NAME/), by path relative to the config file, or
 * by npm package name; its options block is checked against its schema
 * before anything runs, and every problem names the key it comes from.
 */
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Logger } from 'pino';
import { ConfigError, formatKeyPath, issuePath, type LoadedConfig } from './config/load.js';
import type { HookName } from './hooks.js';
import { HOOK_NAMES } from './hooks.js';
import type { PluginDefinition, PluginInstance } from './plugin.js';
import type { Services } from './services/index.js';

const BUILTIN_DIR = fileURLToPath(new URL('../plugins/', import.meta.url));

export type PluginSource = 'built-in' | 'path' | 'package' | 'inline';

export interface ActivePlugin {
  /** As the config names it. */
  readonly ref: string;
  readonly source: PluginSource;
  readonly definition: PluginDefinition<unknown>;
  readonly instance: PluginInstance;
  readonly hooks: readonly HookName[];
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
export async function builtinDefinitions(): Promise<Array<PluginDefinition<unknown>>> {
  const out: Array<PluginDefinition<unknown>> = [];
  for (const name of builtinPlugins()) {
    const mod = (await import(pathToFileURL(path.join(BUILTIN_DIR, name, 'index.js')).href).catch(() => ({}))) as { default?: unknown };
    if (!checkDefinition(mod.default)) out.push(mod.default as PluginDefinition<unknown>);
  }
  return out;
}

function checkDefinition(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return 'the module has no default export with a plugin definition';
  const d = value as Record<string, unknown>;
  if (typeof d.name !== 'string' || !d.name) return 'the definition has no name';
  if (typeof d.setup !== 'function') return 'the definition has no setup function';
  if (d.options !== undefined && typeof (d.options as { safeParse?: unknown }).safeParse !== 'function') return 'options is not a schema (needs safeParse)';
  return undefined;
}

export interface PluginEnvBase {
  readonly services: Services;
  readonly log: Logger;
}

/**
 * Loads every plugin the listeners and the delivery name (each once), validates options and runs setup.
 * All problems are collected and thrown together as one ConfigError.
 */
export async function startPlugins(loaded: LoadedConfig, base: PluginEnvBase, inline: ReadonlyMap<string, PluginDefinition<unknown>> = new Map()): Promise<Map<string, ActivePlugin>> {
  const { config } = loaded;
  const problems: string[] = [];
  const active = new Map<string, ActivePlugin>();
  const refs = new Map<string, Array<ReadonlyArray<string | number>>>();
  config.listeners.forEach((l, i) => l.plugins.forEach((ref, j) => refs.set(ref, [...(refs.get(ref) ?? []), ['listeners', i, 'plugins', j]])));
  config.delivery.plugins.forEach((ref, j) => refs.set(ref, [...(refs.get(ref) ?? []), ['delivery', 'plugins', j]]));

  for (const [ref, places] of refs) {
    const where = places[0]!;
    const at = `${loaded.locate(where)}: ${formatKeyPath(where, config)}`;
    let definition: PluginDefinition<unknown>;
    let source: PluginSource = 'inline';
    const given = inline.get(ref);
    if (given) {
      definition = given;
    } else {
      const found = resolvePlugin(ref, loaded.file);
      if (!found) {
        problems.push(`${at}: unknown plugin "${ref}": not a built-in (${builtinPlugins().join(', ')}), not a file, not an installed package`);
        continue;
      }
      source = found.source;
      let mod: { default?: unknown };
      try {
        mod = (await import(found.url)) as { default?: unknown };
      } catch (err) {
        problems.push(`${at}: plugin "${ref}" failed to load: ${(err as Error).message.split('\n')[0]}`);
        continue;
      }
      const bad = checkDefinition(mod.default);
      if (bad) {
        problems.push(`${at}: plugin "${ref}": ${bad}`);
        continue;
      }
      definition = mod.default as PluginDefinition<unknown>;
    }
    const raw = config.plugins[ref] ?? {};
    let options: unknown = raw;
    if (definition.options) {
      const result = definition.options.safeParse(raw);
      if (!result.success) {
        for (const issue of result.error.issues) {
          const key = ['plugins', ref, ...issuePath(issue)];
          problems.push(`${loaded.locate(key)}: ${formatKeyPath(key)}: ${issue.message}`);
        }
        continue;
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
      });
      const hooks = HOOK_NAMES.filter((h) => typeof instance?.hooks?.[h] === 'function');
      active.set(ref, { ref, source, definition, instance, hooks });
    } catch (err) {
      problems.push(`${loaded.locate(['plugins', ref])}: plugins.${ref}: ${(err as Error).message}`);
    }
  }

  if (problems.length) {
    await closePlugins(active.values(), base.log);
    throw new ConfigError(loaded.file, problems);
  }
  return active;
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

/** Options blocks no listener or delivery uses: probably a typo in a plugin name. */
export function unusedOptionBlocks(loaded: LoadedConfig): string[] {
  const used = new Set([...loaded.config.listeners.flatMap((l) => l.plugins), ...loaded.config.delivery.plugins]);
  return Object.keys(loaded.config.plugins).filter((k) => !used.has(k));
}
