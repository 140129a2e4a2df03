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
import { timeoutReason } from './abort.js';
import { HookRun, type HookScope } from './hook-scope.js';
import type { HookAnswers, HookContexts, HookInput, HookName, Hooks } from './hooks.js';
import type { HookTimer, Metrics } from './services/metrics.js';

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
  /** For a fault, what went wrong in words ("threw: ENOENT: ...", "timed out after 30000 ms"). */
  readonly reason?: string;
}

export const PLUGIN_FAULT: Defer = answer.defer(451, '4.3.0', 'Temporary local problem, please try again later');

class HookTimeout extends Error {}

/** The run's signal fired from outside (connection closed, queue stopping): the answer is no longer wanted. */
class HookAbandoned extends Error {
  constructor(readonly reason: unknown) {
    super('abandoned');
  }
}

/**
 * A hook's context: the caller's fields copied onto an object whose `signal`
 * (on the prototype) is made only when read. Object.assign onto a class
 * instance, because an object spread of the caller's literal costs about
 * 0.8 µs here, a tenth of that this way, for every hook of every command.
 * Contexts are plain literals (closures, no `this`), so copying keeps them working.
 */
class RunContext {
  readonly #run: HookRun;
  constructor(run: HookRun) {
    this.#run = run;
  }
  get signal(): AbortSignal {
    return this.#run.signal;
  }
}

const CONTINUE: HookResult<HookName> = { answer: answer.continue(), plugin: undefined, fault: false };

export class Pipeline {
  private readonly byHook: { [K in HookName]?: Array<{ name: string; fn: NonNullable<Hooks[K]>; timer: HookTimer | undefined }> } = {};

  constructor(
    readonly plugins: readonly PipelinePlugin[],
    private readonly timeoutMs: number,
    private readonly log: Logger,
    /** Hook durations (a timer bound per hook and plugin, here, once) and plugin faults. */
    private readonly metrics?: Metrics,
  ) {
    for (const plugin of plugins) {
      for (const [hook, fn] of Object.entries(plugin.hooks) as Array<[HookName, Hooks[HookName]]>) {
        if (typeof fn !== 'function') continue;
        const list = (this.byHook[hook] ??= []) as Array<{ name: string; fn: typeof fn; timer: HookTimer | undefined }>;
        list.push({ name: plugin.name, fn, timer: metrics?.hookTimer(hook, plugin.name) });
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

  /**
   * Runs `hook` through the chain. The context's `signal` fires when a plugin
   * runs out of time (its reason a TimeoutError naming plugin, hook and limit)
   * or when `scope` ends (the connection closed, the queue stops). Either way
   * the chain stops there with the core's 451; the plugin's late answer, if it
   * ever comes, is ignored. The signal is only made if a plugin reads it.
   */
  async run<K extends HookName>(hook: K, input: HookInput<K>, log: Logger = this.log, scope?: HookScope): Promise<HookResult<K>> {
    const chain = this.byHook[hook] as Array<{ name: string; fn: (c: HookContexts[K]) => HookAnswers[K] | Promise<HookAnswers[K]>; timer: HookTimer | undefined }> | undefined;
    // Most hooks of most listeners have no plugin: nothing is allocated for them.
    if (!chain || chain.length === 0) return CONTINUE as HookResult<K>;
    const run = scope ? scope.begin() : new HookRun(undefined);
    const context = Object.assign(new RunContext(run), input) as unknown as HookContexts[K];
    try {
      for (const { name, fn, timer } of chain) {
        let result: unknown;
        try {
          const stopped = run.stopped;
          if (stopped) throw new HookAbandoned(stopped.reason);
          const started = timer ? performance.now() : 0;
          try {
            result = await this.call(fn, context, run, name, hook);
          } finally {
            timer?.((performance.now() - started) / 1000);
          }
        } catch (err) {
          // The core's 451 for this plugin is a decision like any other (the log line says defer).
          this.metrics?.decision(hook, name, 'defer');
          if (err instanceof HookAbandoned) {
            // Nobody is waiting for the answer any more: not the plugin's fault, not an error.
            const reason = `abandoned: ${describe(err.reason)}`;
            log.info({ hook, plugin: name, action: 'defer', code: 451, reason }, `plugin ${name} abandoned in ${hook} hook: ${describe(err.reason)}`);
            return { answer: PLUGIN_FAULT, plugin: name, fault: true, reason };
          }
          const timedOut = err instanceof HookTimeout;
          const reason = timedOut ? `timed out after ${this.timeoutMs} ms` : `threw: ${describe(err)}`;
          // The stack says where in the plugin it went wrong (pino prints err.stack).
          log.error({ hook, plugin: name, action: 'defer', code: 451, reason: `plugin ${reason}`, ...(timedOut ? {} : { err }) }, `plugin ${name} ${reason} in ${hook} hook`);
          return { answer: PLUGIN_FAULT, plugin: name, fault: true, reason };
        }
        const invalid = validateAnswer(result);
        if (invalid) {
          const reason = `bad answer: ${invalid}`;
          this.metrics?.decision(hook, name, 'defer');
          log.error({ hook, plugin: name, action: 'defer', code: 451, reason }, `plugin ${name} gave a bad answer in ${hook} hook: ${invalid}`);
          return { answer: PLUGIN_FAULT, plugin: name, fault: true, reason };
        }
        const a = result as HookAnswers[K];
        if (a.action !== 'continue') return { answer: a, plugin: name, fault: false };
      }
      return CONTINUE as HookResult<K>;
    } finally {
      run.finish();
    }
  }

  /**
   * One plugin's hook, settled by its answer, its time limit (which stops the
   * run: the signal fires with a TimeoutError) or the run being stopped from
   * outside, whichever comes first.
   */
  private call<C, R>(fn: (c: C) => R | Promise<R>, context: C, run: HookRun, plugin: string, hook: HookName): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => run.abort(timeoutReason(`plugin ${plugin} timed out after ${this.timeoutMs} ms in ${hook} hook`), true), this.timeoutMs);
      run.waitFor((stopped) => {
        clearTimeout(timer);
        reject(stopped.timedOut ? new HookTimeout() : new HookAbandoned(stopped.reason));
      });
      const done = () => {
        clearTimeout(timer);
        run.waitFor(undefined);
      };
      // A plugin may throw synchronously; that is a fault like any other.
      Promise.resolve()
        .then(() => fn(context))
        .then(
          (v) => {
            done();
            resolve(v);
          },
          (e: unknown) => {
            done();
            reject(e);
          },
        );
    });
  }
}

function describe(err: unknown): string {
  if (err instanceof Error || err instanceof DOMException) return err.message || err.name;
  return String(err);
}
