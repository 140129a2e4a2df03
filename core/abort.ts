/**
 * Small helpers for AbortSignal, shared by the pipeline and the services that
 * take one (DNS, the store, the spamd and clamd clients).
 *
 * AbortSignal.any is not used anywhere: in Node 20 the combined signal keeps
 * its sources alive and leaks one entry per call, and the pipeline would make
 * one for every hook of every SMTP command. Listeners are added with
 * `addEventListener` and always removed when the work settles.
 */

/** The trailing options argument of every service call that can be cancelled. */
export interface AbortOptions {
  /** Abandon the call when this fires: it settles at once (see each service for how). */
  readonly signal?: AbortSignal | undefined;
}

/** A DOMException named TimeoutError, as AbortSignal.timeout() uses: `reason.name === 'TimeoutError'` tells a timeout from a hang-up. */
export function timeoutReason(message: string): DOMException {
  return new DOMException(message, 'TimeoutError');
}

/** A DOMException named AbortError: the reason given when a connection or the queue goes away. */
export function abortReason(message: string): DOMException {
  return new DOMException(message, 'AbortError');
}

/**
 * Settles with `work`, or as soon as `signal` fires with what `onAbort`
 * gives (or throws). `work` itself is not stopped: use this only where the
 * thing underneath cannot be cancelled, and let it finish in the background.
 */
export function raceAbort<T>(work: Promise<T>, signal: AbortSignal | undefined, onAbort: (reason: unknown) => T | Promise<T>): Promise<T> {
  if (!signal) return work;
  if (signal.aborted) {
    work.catch(() => undefined); // nobody waits for it any more
    return Promise.resolve().then(() => onAbort(signal.reason));
  }
  return new Promise<T>((resolve, reject) => {
    const abort = () => {
      work.catch(() => undefined);
      Promise.resolve()
        .then(() => onAbort(signal.reason))
        .then(resolve, reject);
    };
    signal.addEventListener('abort', abort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', abort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', abort);
        reject(e);
      },
    );
  });
}

/** `raceAbort` that rejects with the signal's reason, as fetch() does. */
export function rejectOnAbort<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  return raceAbort(work, signal, (reason) => {
    throw reason;
  });
}
