/**
 * Reads the YAML config file and validates it. Every problem names the file,
 * the line, the key and the reason, so a typo is found without guessing.
 */
import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMap, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import { configSchema, type Config } from './schema.js';

/** The embedded default config (config/yubin.yaml in the package). */
export const DEFAULT_CONFIG_FILE = fileURLToPath(new URL('../../../config/yubin.yaml', import.meta.url));

/** The package's own directory (where package.json is). */
const PACKAGE_DIR = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * The config a command uses when none is named: in a source checkout the
 * embedded one (its dataDir is the checkout's var/); in an installed package
 * (under node_modules, global or not) ./yubin.yaml if there is one, else
 * none: an installed package never keeps mail inside its own directory.
 */
export function defaultConfigFile(): string | undefined {
  if (!PACKAGE_DIR.split(path.sep).includes('node_modules')) return DEFAULT_CONFIG_FILE;
  const here = path.resolve('yubin.yaml');
  return existsSync(here) ? here : undefined;
}

/** What to say when there is no config to read. */
const NO_CONFIG = 'no config file: name one with -c FILE (or YUBIN_CONFIG), or make a site with `yubin init DIR` and run `yubin serve DIR`';

/** A config argument as given: a file, or a site directory holding yubin.yaml. */
export function resolveConfigArg(file: string): string {
  const abs = path.resolve(file);
  try {
    if (statSync(abs).isDirectory()) return path.join(abs, 'yubin.yaml');
  } catch {
    // not there: loadConfig says so
  }
  return abs;
}

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly problems: readonly string[],
  ) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
  }
}

export interface LoadedConfig {
  /** Absolute path of the file read. */
  readonly file: string;
  readonly config: Config;
  /** Resolves a path written in the config against the config file's directory. */
  resolvePath(p: string): string;
  /** Where each key sits in the file, for errors found after validation (plugin options). */
  locate(keyPath: ReadonlyArray<PropertyKey>): string;
}

/** Reads FILE, or DIR/yubin.yaml when given a site directory. */
export async function loadConfig(file: string): Promise<LoadedConfig> {
  if (!file) throw new ConfigError('', [NO_CONFIG]);
  const abs = resolveConfigArg(file);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (err) {
    throw new ConfigError(abs, [`${abs}: cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`]);
  }
  return parseConfig(text, abs);
}

export function parseConfig(text: string, file: string): LoadedConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const where = (offset: number | undefined): string => {
    if (offset === undefined) return file;
    return `${file}:${lines.linePos(offset).line}`;
  };
  if (doc.errors.length) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => `${where(e.pos[0])}: YAML syntax: ${e.message.split('\n')[0]}`),
    );
  }
  const locate = (keyPath: ReadonlyArray<PropertyKey>): string => where(offsetOf(doc, keyPath));
  const raw: unknown = doc.toJS() ?? {};
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    throw new ConfigError(
      file,
      result.error.issues.map((issue) => {
        const key = issuePath(issue);
        return `${locate(key)}: ${formatKeyPath(key, raw) || '(top level)'}: ${issue.message}`;
      }),
    );
  }
  const dir = path.dirname(file);
  const resolvePath = (p: string) => path.resolve(dir, p);
  const { delivery } = result.data;
  // Paths the queue reads are made absolute here: it has no config directory of its own.
  const config = { ...result.data, dataDir: resolvePath(result.data.dataDir), delivery: delivery.caFile ? { ...delivery, caFile: resolvePath(delivery.caFile) } : delivery };
  return { file, config, resolvePath, locate };
}

/** The key an issue is about: for an unknown key, the key itself rather than the object holding it. */
export function issuePath(issue: { readonly path: ReadonlyArray<PropertyKey>; readonly keys?: readonly string[] }): PropertyKey[] {
  return issue.keys?.length === 1 ? [...issue.path, issue.keys[0]!] : [...issue.path];
}

/** `listeners[1](submission).limits.maxRecipients`: the listener's name makes the index readable. */
export function formatKeyPath(keyPath: ReadonlyArray<PropertyKey>, raw?: unknown): string {
  let out = '';
  let node: unknown = raw;
  for (const key of keyPath) {
    if (typeof key === 'number') {
      out += `[${key}]`;
      node = Array.isArray(node) ? node[key] : undefined;
      const name = node && typeof node === 'object' && 'name' in node ? (node as { name: unknown }).name : undefined;
      if (typeof name === 'string') out += `(${name})`;
    } else {
      out += (out ? '.' : '') + String(key);
      node = node && typeof node === 'object' ? (node as Record<string, unknown>)[String(key)] : undefined;
    }
  }
  return out;
}

/** Offset of the deepest existing node along the path, so a missing key points at its parent. */
function offsetOf(doc: Document, keyPath: ReadonlyArray<PropertyKey>): number | undefined {
  let node: unknown = doc.contents;
  let offset: number | undefined = rangeStart(node);
  for (const key of keyPath) {
    let next: unknown;
    if (isMap(node)) {
      const pair = node.items.find((p) => {
        const k = p.key as { value?: unknown } | null;
        return k !== null && typeof k === 'object' && String(k.value) === String(key);
      });
      if (pair) {
        offset = rangeStart(pair.key) ?? offset;
        next = pair.value;
      }
    } else if (isSeq(node) && typeof key === 'number') {
      next = node.items[key];
    }
    if (next === undefined || next === null) break;
    node = next;
    offset = rangeStart(node) ?? offset;
  }
  return offset;
}

function rangeStart(node: unknown): number | undefined {
  const range = (node as { range?: [number, number, number] } | null)?.range;
  return range?.[0];
}
