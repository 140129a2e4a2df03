/**
 * A minimal clamd client: `zINSTREAM` (the message as length-prefixed chunks,
 * ended by a zero-length chunk) and `zPING`, over TCP or a Unix socket.
 *
 * Written here instead of using clamdjs 1.0.2: that package cannot talk to a
 * Unix socket, keeps its socket to itself (a caller's timeout cannot destroy
 * it), arms `socket.setTimeout` without a 'timeout' handler (an idle clamd
 * leaves its promise pending until a second timer fires) and ships no types.
 *
 * Every call has its own connect timeout and an overall deadline; when either
 * runs out the socket and the input stream are destroyed, nothing lingers.
 * So does a fired `signal` (a hook's `ctx.signal`): the call then rejects
 * with the signal's reason.
 */
import net from 'node:net';
import type { Readable } from 'node:stream';
import type { AbortOptions } from '../../core/abort.js';

export interface ClamdTarget {
  readonly host: string;
  readonly port: number;
  /** A Unix socket path; wins over host and port. */
  readonly socket?: string | undefined;
}

export interface ClamdTimeouts {
  /** Milliseconds to get a connection. */
  readonly connectTimeout: number;
  /** Milliseconds for the whole exchange, connect included. */
  readonly timeout: number;
}

export type ScanVerdict = { readonly kind: 'clean' } | { readonly kind: 'infected'; readonly signature: string };

/** No verdict: clamd unreachable, too slow, or answered with an error. */
export class ClamdError extends Error {
  constructor(
    message: string,
    /** connect: no connection; timeout: no answer in time; error: clamd's own `... ERROR`; protocol: anything else. */
    readonly reason: 'connect' | 'timeout' | 'error' | 'protocol',
  ) {
    super(message);
    this.name = 'ClamdError';
  }
}

/** Largest chunk sent in one INSTREAM frame. */
const CHUNK = 64 * 1024;

/** Parses one clamd reply to INSTREAM (terminator already removed). */
export function parseInstreamReply(reply: string): ScanVerdict {
  const text = reply.trim();
  if (text === 'stream: OK') return { kind: 'clean' };
  const found = /^stream: (.+) FOUND$/.exec(text);
  if (found) return { kind: 'infected', signature: found[1]! };
  if (/ERROR$/.test(text)) throw new ClamdError(`clamd: ${text}`, 'error');
  throw new ClamdError(`clamd: unexpected reply ${JSON.stringify(text.slice(0, 200))}`, 'protocol');
}

/**
 * Sends one NUL-terminated command, optionally followed by a body writer, and
 * resolves with the NUL-terminated reply (without the NUL).
 */
function exchange(target: ClamdTarget, limits: ClamdTimeouts, command: string, body?: (socket: net.Socket) => Promise<void>, input?: Readable, signal?: AbortSignal): Promise<string> {
  if (signal?.aborted) {
    input?.destroy();
    return Promise.reject(signal.reason as Error);
  }
  return new Promise<string>((resolve, reject) => {
    const socket = target.socket ? net.createConnection({ path: target.socket }) : net.createConnection({ host: target.host, port: target.port });
    let settled = false;
    let connected = false;
    let lastError: Error | undefined;
    const chunks: Buffer[] = [];

    const finish = (err: Error | undefined, reply?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      clearTimeout(overallTimer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (input && !input.destroyed) input.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const connectTimer = setTimeout(() => finish(new ClamdError(`clamd: no connection within ${limits.connectTimeout} ms`, 'timeout')), limits.connectTimeout);
    const overallTimer = setTimeout(() => finish(new ClamdError(`clamd: no answer within ${limits.timeout} ms`, 'timeout')), limits.timeout);
    const onAbort = () => finish(signal!.reason as Error);
    signal?.addEventListener('abort', onAbort, { once: true });

    socket.on('connect', () => {
      connected = true;
      clearTimeout(connectTimer);
      socket.write(command);
      if (body) {
        body(socket).catch((err: Error) => {
          // A write failing because clamd closed early (size limit) is not the
          // story: its reply (or the close) settles. An input failure is.
          if (err instanceof WriteFailed) lastError ??= err.cause as Error;
          else finish(new ClamdError(`reading the message: ${err.message}`, 'protocol'));
        });
      }
    });
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      const all = Buffer.concat(chunks);
      const nul = all.indexOf(0);
      if (nul >= 0) finish(undefined, all.subarray(0, nul).toString('utf8'));
    });
    socket.on('error', (err) => {
      lastError = err;
    });
    socket.on('close', () => {
      if (settled) return;
      const all = Buffer.concat(chunks).toString('utf8');
      if (all.trim()) return finish(undefined, all);
      if (!connected) return finish(new ClamdError(`clamd: cannot connect: ${lastError?.message ?? 'closed'}`, 'connect'));
      finish(new ClamdError(`clamd: connection closed without a reply${lastError ? `: ${lastError.message}` : ''}`, 'protocol'));
    });
  });
}

/** A write to clamd failed (it closed early); its reply or the close settles. */
class WriteFailed extends Error {}

/** Writes respecting backpressure; rejects with WriteFailed when the socket fails. */
function write(socket: net.Socket, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return reject(new WriteFailed('socket closed'));
    const ok = socket.write(data, (err) => {
      if (err) reject(new WriteFailed('write failed', { cause: err }));
      else if (ok) resolve();
    });
    if (!ok) {
      const onDrain = () => {
        socket.off('close', onClose);
        resolve();
      };
      const onClose = () => {
        socket.off('drain', onDrain);
        reject(new WriteFailed('socket closed'));
      };
      socket.once('drain', onDrain);
      socket.once('close', onClose);
    }
  });
}

function frame(data: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(data.length, 0);
  return Buffer.concat([head, data]);
}

/**
 * Streams `input` to clamd with zINSTREAM; resolves with its verdict, rejects with ClamdError when there is none,
 * or with the signal's reason when `call.signal` fires first.
 */
export async function scanStream(target: ClamdTarget, input: Readable, limits: ClamdTimeouts, call?: AbortOptions): Promise<ScanVerdict & { readonly bytes: number }> {
  let bytes = 0;
  const reply = await exchange(
    target,
    limits,
    'zINSTREAM\0',
    async (socket) => {
      try {
        for await (const piece of input) {
          const buf = typeof piece === 'string' ? Buffer.from(piece) : (piece as Buffer);
          for (let at = 0; at < buf.length; at += CHUNK) {
            const part = buf.subarray(at, at + CHUNK);
            bytes += part.length;
            await write(socket, frame(part));
          }
        }
      } catch (err) {
        if (socket.destroyed) return; // settled elsewhere (timeout, early reply)
        throw err;
      }
      if (socket.destroyed) return;
      await write(socket, Buffer.alloc(4));
    },
    input,
    call?.signal,
  );
  return { ...parseInstreamReply(reply), bytes };
}

/** `zPING` → true when clamd answers PONG. */
export async function ping(target: ClamdTarget, limits: ClamdTimeouts, call?: AbortOptions): Promise<boolean> {
  try {
    return (await exchange(target, limits, 'zPING\0', undefined, undefined, call?.signal)).trim() === 'PONG';
  } catch {
    return false;
  }
}
