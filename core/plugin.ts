/**
 * What a plugin module exports: one definition with a name, an options schema
 * and a setup function that returns the hooks it serves.
 */
import type { Command, Option } from 'commander';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from './config/schema.js';
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
  /**
   * The whole configuration this plugin was started with, for plugins that
   * administer the site (webadmin reads the listeners and other plugins'
   * options with `commandOptions`). Read it; do not keep it past a reload.
   */
  readonly config: Config;
}

/** The http listener a plugin's HTTP service is mounted on. */
export interface HttpListenerInfo {
  readonly name: string;
  /** The configured address (`0.0.0.0`, `127.0.0.1`, `::1`...). */
  readonly host: string;
  readonly port: number;
  /** HTTPS from the first byte (`tls: implicit`). */
  readonly https: boolean;
  /** The listener takes connections from loopback only (its host is 127.0.0.0/8 or ::1). */
  readonly loopbackOnly: boolean;
}

/**
 * What a plugin serves on `protocol: http` listeners that name it in
 * `serve: [...]`. Routes are added to a Fastify instance made for each
 * listener and each configuration (a reload makes new ones; requests in
 * progress finish on the old). Throw to refuse a listener, with a message
 * saying why (webadmin refuses plain HTTP off loopback).
 */
export interface HttpService {
  routes(app: FastifyInstance, listener: HttpListenerInfo): void | Promise<void>;
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
  /** Routes for http listeners that list this plugin in `serve`. */
  readonly http?: HttpService;
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
