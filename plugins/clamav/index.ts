/**
 * clamav: virus scanning at the end of DATA, as qmail-scanner or simscan did
 * with clamdscan. The message as it will be queued is streamed to clamd with
 * `zINSTREAM` (TCP or a Unix socket), under our own connect timeout and
 * overall deadline; the socket is destroyed when either runs out.
 *
 * - clean → passes on; with `header` (default) it gets `X-Virus-Scanned: clamav`.
 * - infected → `554 5.7.1 Virus found: <signature>`.
 * - no verdict (clamd down, too slow, `... ERROR` such as the size limit) →
 *   `onError: 'accept'` (default) lets it through with
 *   `X-Virus-Scanned: unchecked (clamd unavailable)`; `'defer'` answers
 *   `451 4.7.1` so the sender retries.
 * - larger than `maxSize` (keep it at clamd's StreamMaxLength, 25M by
 *   default) → not sent at all, logged, passed with
 *   `X-Virus-Scanned: unchecked (message too large)` (with `header`).
 *
 * One log line per message: result, signature, elapsed ms, bytes sent.
 * Keep `timeout` below the server's hookTimeout (30 s by default), or the
 * core gives up on the hook first.
 */
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import { answer, definePlugin } from '../../core/index.js';
import { ClamdError, scanStream, type ClamdTarget } from './clamd.js';

export { ClamdError, parseInstreamReply, ping, scanStream, type ClamdTarget, type ClamdTimeouts, type ScanVerdict } from './clamd.js';

declare module '../../core/hooks.js' {
  interface TransactionState {
    /** What the clamav plugin found: clean, infected, skipped or unchecked. */
    clamav?: { result: 'clean' | 'infected' | 'skipped' | 'unchecked'; signature?: string };
  }
}

const MB = 1024 * 1024;

const options = z.strictObject({
  host: z.string().min(1).default('127.0.0.1'),
  port: z.number().int().min(1).max(65535).default(3310),
  /** clamd's LocalSocket; when given, host and port are not used. */
  socket: z.string().min(1).optional(),
  /** Milliseconds for the whole scan (connect, stream, verdict). */
  timeout: z.number().int().positive().default(25_000),
  /** Milliseconds to get a connection to clamd. */
  connectTimeout: z.number().int().positive().default(5_000),
  /** Messages larger than this (octets) are not scanned; match clamd's StreamMaxLength. */
  maxSize: z.number().int().positive().default(25 * MB),
  /** No verdict from clamd: let the message through marked unchecked, or answer 451. */
  onError: z.enum(['accept', 'defer']).default('accept'),
  /** Add `X-Virus-Scanned: clamav` to clean mail (and the unchecked header to skipped mail). */
  header: z.boolean().default(true),
});

const HEADER = 'X-Virus-Scanned';

/** A signature name as clamd gives it, safe in an SMTP reply line. */
const clean = (s: string) => s.replace(/[^\x21-\x7e ]/g, '?').slice(0, 200);

export default definePlugin({
  name: 'clamav',
  options,
  setup({ options, log, resolvePath }) {
    const target: ClamdTarget = { host: options.host, port: options.port, socket: options.socket ? resolvePath(options.socket) : undefined };
    const limits = { timeout: options.timeout, connectTimeout: Math.min(options.connectTimeout, options.timeout) };
    const where = target.socket ?? `${target.host}:${target.port}`;

    return {
      hooks: {
        async data({ connection, transaction, message, signal }) {
          const started = performance.now();
          const base = { conn: connection.id, queueId: transaction.id, size: message.size, clamd: where };
          const elapsed = () => Math.round(performance.now() - started);

          if (message.size > options.maxSize) {
            transaction.state.clamav = { result: 'skipped' };
            if (options.header) message.addHeader(HEADER, 'unchecked (message too large)');
            log.info({ ...base, result: 'skipped', maxSize: options.maxSize, elapsedMs: elapsed() }, `clamav: skipped, ${message.size} octets > maxSize ${options.maxSize}`);
            return answer.continue();
          }

          let verdict;
          try {
            verdict = await scanStream(target, message.stream(), limits, { signal });
          } catch (e) {
            const err = e instanceof Error ? e : new Error(String(e));
            const reason = err instanceof ClamdError ? err.reason : 'protocol';
            transaction.state.clamav = { result: 'unchecked' };
            const fields = { ...base, result: 'unchecked', reason, err: err.message, onError: options.onError, elapsedMs: elapsed() };
            if (options.onError === 'defer') {
              log.warn(fields, `clamav: no verdict (${err.message}); deferring`);
              return answer.defer(451, '4.7.1', 'virus scanner unavailable, try again later');
            }
            log.warn(fields, `clamav: no verdict (${err.message}); accepting unchecked`);
            message.addHeader(HEADER, 'unchecked (clamd unavailable)');
            return answer.continue();
          }

          if (verdict.kind === 'infected') {
            const signature = clean(verdict.signature);
            transaction.state.clamav = { result: 'infected', signature };
            log.info({ ...base, result: 'infected', signature, bytes: verdict.bytes, elapsedMs: elapsed() }, `clamav: infected: ${signature}`);
            return answer.reject(554, '5.7.1', `Virus found: ${signature}`);
          }
          transaction.state.clamav = { result: 'clean' };
          if (options.header) message.addHeader(HEADER, 'clamav');
          log.info({ ...base, result: 'clean', bytes: verdict.bytes, elapsedMs: elapsed() }, 'clamav: clean');
          return answer.continue();
        },
      },
    };
  },
});
