/**
 * How a plugin's options are put together: the top-level `plugins.NAME`
 * block, with the options a list entry gives merged over it.
 */
import { mailListeners, type Config } from './schema.js';

/**
 * Options blocks merge key by key: a map merges into a map, anything else
 * (a list, a number) replaces what the top-level block said.
 */
export function mergeOptions(base: Readonly<Record<string, unknown>>, over: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isPlainMap(b) && isPlainMap(v) ? mergeOptions(b, v) : v;
  }
  return out;
}

export function isPlainMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The options a plugin's commands should use (vpopmail's store, mailauth's key
 * directory): as `delivery.plugins` names it, else as the first listener that
 * lists it, else the top-level block.
 */
export function commandOptions(config: Config, ref: string): Record<string, unknown> {
  const base = (config.plugins[ref] ?? {}) as Record<string, unknown>;
  const entry = [...config.delivery.plugins, ...mailListeners(config).flatMap((l) => l.plugins)].find((p) => p.ref === ref);
  return mergeOptions(base, entry?.options ?? {});
}
