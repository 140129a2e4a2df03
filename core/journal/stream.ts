/**
 * The main thread's end of the journal writer (transport.ts, in a worker
 * thread). Lines are gathered here and handed over every 100 ms (or at
 * 256 KiB) as one write: each hand-off to the worker wakes it through a
 * futex, and one per log line cost more CPU than the journal's SQLite
 * inserts. What is still gathered at exit is handed over synchronously.
 */
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import type { JournalTransportOptions } from './transport.js';

const TRANSPORT = fileURLToPath(new URL('./transport.js', import.meta.url));
const HAND_OVER_MS = 100;
const HAND_OVER_BYTES = 256 * 1024;

interface ThreadStream {
  write(chunk: string): boolean;
  flushSync(): void;
  end(): void;
  readonly closed: boolean;
  on(event: 'error', listener: (err: Error) => void): void;
}

export interface JournalStream {
  write(line: string): void;
  /** Hands what is gathered to the worker and waits until the worker has it. */
  flushSync(): void;
}

export function journalStream(options: JournalTransportOptions): JournalStream {
  // autoEnd off: pino's own exit hook could run before ours and end the stream with our lines still here.
  const worker = pino.transport<JournalTransportOptions>({ target: TRANSPORT, options, worker: { autoEnd: false } }) as unknown as ThreadStream;
  let told = false;
  worker.on('error', (err) => {
    if (told) return;
    told = true;
    process.stderr.write(`yubin: journal: ${err.message}; the server goes on without the journal\n`);
  });
  let pending: string[] = [];
  let bytes = 0;
  let timer: NodeJS.Timeout | undefined;
  const handOver = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (!pending.length || worker.closed) return;
    const chunk = pending.join('');
    pending = [];
    bytes = 0;
    worker.write(chunk);
  };
  process.once('exit', () => {
    handOver();
    if (worker.closed) return;
    worker.flushSync();
    worker.end();
  });
  return {
    write(line) {
      pending.push(line);
      bytes += line.length;
      if (bytes >= HAND_OVER_BYTES) handOver();
      else if (!timer) timer = setTimeout(handOver, HAND_OVER_MS).unref();
    },
    flushSync() {
      handOver();
      if (!worker.closed) worker.flushSync();
    },
  };
}
