/**
 * What the primary and its workers say to each other over the cluster IPC
 * channel (`workers: N`). Every message is one JSON object tagged `yubin`, so
 * it is never taken for node:cluster's own or prom-client's. A request that
 * wants an answer carries `n`, a number unique in the asking process, and the
 * answer carries the same `n`: one message each way, nothing batched.
 */
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { ThrottleVerdict } from '../services/login-throttle.js';

/** A listener a worker has bound, as `yubin status` and the scheduler's loop check need it. */
export interface ListenerAddress {
  readonly name: string;
  readonly protocol: 'smtp' | 'pop3';
  readonly address: string;
  readonly port: number;
  readonly family: string;
}

/** How a login attempt ended, for the throttle's ticket in the primary. */
export type LoginEnd = 'succeeded' | 'failed' | 'released';

/** One process's metrics as prom-client lists them, ready to be summed with the others'. */
export type MetricsSnapshot = Array<MetricObjectWithValues<MetricValue<string>>>;

/** Worker → primary. */
export type WorkerMessage =
  /** The worker's listeners are bound: it takes connections from now on. */
  | { readonly yubin: 'ready'; readonly listeners: readonly ListenerAddress[] }
  /** A message is in the spool (fsynced, renamed): the scheduler takes it. */
  | { readonly yubin: 'commit'; readonly id: string }
  /** A connection was accepted: count it on its listener and its IP. Answered by a 'slot'. */
  | { readonly yubin: 'slot'; readonly n: number; readonly listener: string; readonly ip: string }
  /** The connection counted as slot `n` is closed. */
  | { readonly yubin: 'unslot'; readonly n: number }
  /** A login attempt: the throttle's verdict, the attempt counted as pending. Answered by a 'login'. */
  | { readonly yubin: 'login'; readonly n: number; readonly ip: string; readonly account: string }
  /** The attempt `n` ended. */
  | { readonly yubin: 'login-end'; readonly n: number; readonly how: LoginEnd }
  /** A POP3 session wants this maildrop. Answered by a 'lock'. */
  | { readonly yubin: 'lock'; readonly n: number; readonly key: string }
  /** The maildrop taken as lock `n` is free again. */
  | { readonly yubin: 'unlock'; readonly n: number }
  /** Answer to 'metrics?'. */
  | { readonly yubin: 'metrics'; readonly n: number; readonly metrics: MetricsSnapshot }
  /** Answer to 'reload'. */
  | { readonly yubin: 'reloaded'; readonly n: number; readonly ok: boolean };

/** Primary → worker. */
export type PrimaryMessage =
  /** `rank`: connections from this IP on this listener, across workers, this one included; `total`: the listener's. */
  | { readonly yubin: 'slot'; readonly n: number; readonly rank: number; readonly total: number }
  | { readonly yubin: 'login'; readonly n: number; readonly verdict: ThrottleVerdict }
  | { readonly yubin: 'lock'; readonly n: number; readonly granted: boolean }
  | { readonly yubin: 'metrics?'; readonly n: number }
  /** SIGHUP reached the primary: read the config again. */
  | { readonly yubin: 'reload'; readonly n: number }
  /** SIGTERM reached the primary: drain, then exit 0. */
  | { readonly yubin: 'stop'; readonly timeoutMs: number };

function tagged(m: unknown): m is { yubin: string } {
  return typeof m === 'object' && m !== null && typeof (m as { yubin?: unknown }).yubin === 'string';
}

export function isWorkerMessage(m: unknown): m is WorkerMessage {
  return tagged(m);
}

export function isPrimaryMessage(m: unknown): m is PrimaryMessage {
  return tagged(m);
}

/** The worker's number (1..N) in the environment the primary forks it with; it keeps it across restarts. */
export const WORKER_ENV = 'YUBIN_WORKER';
