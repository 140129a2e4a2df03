/**
 * Runs one hook through a listener's plugins, in order, until one answers
 * with something other than `continue`.
 *
 * A plugin that throws, times out or returns a malformed answer is a fault:
 * the hook answers 451 4.3.0 and the fault is logged naming the plugin. A
 * fault never turns into an accept, and the server goes on serving.
 */
import type { Logger } from 'pino';
import { answer, validateAnswer, type Defer } from './answers.js';
import { defaultAccount } from './services/login-throttle.js';
import type { HookAnswers, HookContexts, HookName, Hooks } from './hooks.js';

export interface PipelinePlugin {
  /** The definition's name, for logs. */
  readonly name: string;
  readonly hooks: Hooks;
  /** SASL mechanisms the plugin's auth hook checks (PluginInstance.authMechanisms). */
  authMechanisms?(): readonly string[];
  /** The canonical account a login name stands for (PluginInstance.loginAccount). */
  loginAccount?(username: string): string | undefined;
}

export interface HookResult<K extends HookName> {
  readonly answer: HookAnswers[K] | Defer;
  /** The plugin that decided; undefined when every plugin continued. */
  readonly plugin: string | undefined;
  /** The decision is the core's 451 for a plugin fault. */
  readonly fault: boolean;
}

export const PLUGIN_FAULT: Defer = answer.defer(451, '4.3.0', 'Temporary local problem, please try again later');

class HookTimeout extends Error {}

export class Pipeline {
  private readonly byHook: { [K in HookName]?: Array<{ name: string; fn: NonNullable<Hooks[K]> }> } = {};

  constructor(
    readonly plugins: readonly PipelinePlugin[],
    private readonly timeoutMs: number,
    private readonly log: Logger,
  ) {
    for (const plugin of plugins) {
      for (const [hook, fn] of Object.entries(plugin.hooks) as Array<[HookName, Hooks[HookName]]>) {
        if (typeof fn !== 'function') continue;
        const list = (this.byHook[hook] ??= []) as Array<{ name: string; fn: typeof fn }>;
        list.push({ name: plugin.name, fn });
      }
    }
  }

  /** Some plugin of this pipeline serves the hook. */
  has(hook: HookName): boolean {
    return (this.byHook[hook]?.length ?? 0) > 0;
  }

  /** Every plugin of this pipeline that serves `hook` also serves `other` (and some serves it). */
  everyServes(hook: HookName, other: HookName): boolean {
    const serving = this.plugins.filter((p) => typeof p.hooks[hook] === 'function');
    return serving.length > 0 && serving.every((p) => typeof p.hooks[other] === 'function');
  }

  /**
   * SASL mechanisms to offer: those the auth plugins name, in plugin order;
   * PLAIN and LOGIN for an auth plugin that names none.
   */
  authMechanisms(): string[] {
    const out = new Set<string>();
    for (const p of this.plugins) {
      if (typeof p.hooks.auth !== 'function') continue;
      for (const m of p.authMechanisms?.() ?? ['PLAIN', 'LOGIN']) out.add(m.toUpperCase());
    }
    return [...out];
  }

  /**
   * The account a login name stands for, so the failed-login throttle counts
   * `alice%DOM.TEST.` and `alice@dom.test` as one: the first auth plugin that
   * names it decides; otherwise the name case-folded, `%` as `@`, no trailing dot.
   */
  loginAccount(username: string): string {
    for (const p of this.plugins) {
      if (typeof p.hooks.auth !== 'function') continue;
      const account = p.loginAccount?.(username);
      if (account) return account;
    }
    return defaultAccount(username);
  }

  async run<K extends HookName>(hook: K, context: HookContexts[K], log: Logger = this.log): Promise<HookResult<K>> {
    const chain = (this.byHook[hook] ?? []) as Array<{ name: string; fn: (c: HookContexts[K]) => HookAnswers[K] | Promise<HookAnswers[K]> }>;
    for (const { name, fn } of chain) {
      let result: unknown;
      try {
        result = await this.withTimeout(fn, context);
      } catch (err) {
        const reason = err instanceof HookTimeout ? `timed out after ${this.timeoutMs} ms` : `threw: ${describe(err)}`;
        log.error({ hook, plugin: name, action: 'defer', code: 451, reason: `plugin ${reason}` }, `plugin ${name} ${reason} in ${hook} hook`);
        return { answer: PLUGIN_FAULT, plugin: name, fault: true };
      }
      const invalid = validateAnswer(result);
      if (invalid) {
        log.error({ hook, plugin: name, action: 'defer', code: 451, reason: `bad answer: ${invalid}` }, `plugin ${name} gave a bad answer in ${hook} hook: ${invalid}`);
        return { answer: PLUGIN_FAULT, plugin: name, fault: true };
      }
      const a = result as HookAnswers[K];
      if (a.action !== 'continue') return { answer: a, plugin: name, fault: false };
    }
    return { answer: answer.continue() as HookAnswers[K], plugin: undefined, fault: false };
  }

  private withTimeout<C, R>(fn: (c: C) => R | Promise<R>, context: C): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => reject(new HookTimeout()), this.timeoutMs);
      // A plugin may throw synchronously; that is a fault like any other.
      Promise.resolve()
        .then(() => fn(context))
        .then(
          (v) => {
            clearTimeout(timer);
            resolve(v);
          },
          (e: unknown) => {
            clearTimeout(timer);
            reject(e);
          },
        );
    });
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}
