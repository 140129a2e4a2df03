/**
 * What a plugin module exports: one definition with a name, an options schema
 * and a setup function that returns the hooks it serves.
 */
import type { Command, Option } from 'commander';
import type { Logger } from 'pino';
import type { Hooks } from './hooks.js';
import type { Services } from './services/index.js';

export interface OptionsIssue {
  readonly path: ReadonlyArray<PropertyKey>;
  readonly message: string;
}

/**
 * Anything with zod's `safeParse` shape: a zod schema (v3 or v4) fits as is,
 * and a hand-written validator only needs this one method.
 */
export interface OptionsSchema<T> {
  safeParse(input: unknown): { success: true; data: T } | { success: false; error: { issues: ReadonlyArray<OptionsIssue> } };
}

export interface PluginEnv<O> {
  /** The plugin's options block, validated by its schema. */
  readonly options: O;
  /** Logger whose lines name the plugin. */
  readonly log: Logger;
  readonly services: Services;
  readonly hostname: string;
  readonly dataDir: string;
  /** Resolves a path from the options against the config file's directory. */
  resolvePath(path: string): string;
}

export interface PluginInstance {
  readonly hooks: Hooks;
  /**
   * SASL mechanisms this plugin's auth hook can check, asked each time AUTH is
   * offered (EHLO, POP3 CAPA). Challenge-response ones (CRAM-MD5) need a clear
   * password, so a plugin names them only where it keeps one. Unset: PLAIN and LOGIN.
   */
  authMechanisms?(): readonly string[];
  /**
   * The canonical account a login name stands for, the one this plugin's auth
   * hook would check (`alice%DOM.TEST.` → `alice@dom.test`), so the
   * failed-login throttle counts every spelling of an account as one.
   * Undefined for a name the plugin does not know how to read.
   */
  loginAccount?(username: string): string | undefined;
  /** Called when the plugin is replaced (reload) or the server stops. */
  close?(): void | Promise<void>;
}

/** What a plugin's `commands` gets to add subcommands to `yubin`. */
export interface PluginCommandContext {
  /** The `yubin` program (commander). */
  readonly program: Command;
  /** The `-c, --config <file>` option every command takes, with its default and YUBIN_CONFIG. */
  configOption(): Option;
}

/** A command's usage problem: `yubin: MESSAGE` on stderr, then this exit code (2: usage, 1: runtime). */
export class CommandError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}

export interface PluginDefinition<O = unknown> {
  /** Name used in logs; built-ins are named after the program they replace. */
  readonly name: string;
  readonly options?: OptionsSchema<O>;
  /**
   * Plugins (by definition name) that must come earlier in any list that has
   * both: those whose hooks set what this one reads (tcprules' RELAYCLIENT,
   * whitelist's `trusted`). A list that breaks it is refused at start and by
   * check-config. A plugin that is not in the list is no problem.
   */
  readonly after?: readonly string[];
  /** Plugins that must come later in any list that has both. */
  readonly before?: readonly string[];
  setup(env: PluginEnv<O>): PluginInstance | Promise<PluginInstance>;
  /** Adds the plugin's own `yubin` subcommands (vpopmail: `domain`, `user`, `alias`); throw CommandError for usage problems. */
  commands?(cli: PluginCommandContext): void;
}

/** Identity function that lets TypeScript infer the options type from the schema. */
export function definePlugin<O>(definition: PluginDefinition<O>): PluginDefinition<O> {
  return definition;
}
