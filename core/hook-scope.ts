/**
 * What a hook's `signal` hangs off, made cheap for the common case.
 *
 * Node's AbortController and EventTarget are JavaScript objects with a costly
 * setup (a controller, then a listener added and removed: several
 * microseconds), and the pipeline runs a hook for every SMTP command. So none
 * is made until a plugin reads `ctx.signal`: a connection (or the queue) is a
 * HookScope that holds its runs in progress by plain reference, and a run
 * makes its AbortController on first use, already aborted if its time ran out
 * or its scope ended before.
 */
import { abortReason } from './abort.js';

/** Why a run was stopped. */
export interface Stopped {
  readonly reason: unknown;
  /** Its plugin ran out of time (hookTimeout), rather than the scope ending. */
  readonly timedOut: boolean;
}

/** A connection's or the queue's lifetime, as hook runs see it. */
export class HookScope {
  private ended = false;
  /** Why it ended, in words; the AbortError is made from it only when a run will see it. */
  private endWhy = '';
  private endReason: unknown;
  private readonly runs = new Set<HookRun>();

  /**
   * The connection closed (or the queue stops): every run in progress is
   * abandoned, its signal aborted with an AbortError saying `why`.
   */
  end(why: string): void {
    if (this.ended) return;
    this.ended = true;
    this.endWhy = why;
    for (const run of this.runs) run.abort(this.reason(), false);
    this.runs.clear();
  }

  private reason(): unknown {
    return (this.endReason ??= abortReason(this.endWhy));
  }

  /** No run is in progress and the scope has not ended: nothing would notice it being replaced by a fresh one. */
  get idle(): boolean {
    return !this.ended && this.runs.size === 0;
  }

  /** A run of one hook through its chain; stopped at once if the scope has ended. */
  begin(): HookRun {
    const run = new HookRun(this);
    if (this.ended) run.abort(this.reason(), false);
    else this.runs.add(run);
    return run;
  }

  /** The run is over: it is no longer stopped with the scope. */
  release(run: HookRun): void {
    this.runs.delete(run);
  }
}

/** One hook run: its signal (made on first use), and the wait for the plugin being called. */
export class HookRun {
  private controller: AbortController | undefined;
  private stop: Stopped | undefined;
  private interrupt: ((stopped: Stopped) => void) | undefined;

  constructor(private readonly scope: HookScope | undefined) {}

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.stop) this.controller.abort(this.stop.reason);
    }
    return this.controller.signal;
  }

  get stopped(): Stopped | undefined {
    return this.stop;
  }

  /** Stops the run: the signal fires (if a plugin made it) and the wait for the current plugin ends. */
  abort(reason: unknown, timedOut: boolean): void {
    if (this.stop) return;
    this.stop = { reason, timedOut };
    this.controller?.abort(reason);
    this.interrupt?.(this.stop);
  }

  /** While a plugin is waited for: what ends the wait if the run is stopped (undefined when it answered). */
  waitFor(interrupt: ((stopped: Stopped) => void) | undefined): void {
    this.interrupt = interrupt;
  }

  finish(): void {
    this.interrupt = undefined;
    this.scope?.release(this);
  }
}
