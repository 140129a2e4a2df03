/**
 * Our own SPAMC/1.5 client for SpamAssassin's spamd, over TCP or a Unix
 * socket (the npm `spamc` package drops blank lines from bodies and has no
 * timeouts).
 *
 * Request: `<COMMAND> SPAMC/1.5`, `Content-length: <n>` (exact octets),
 * optional `User: <name>`, a blank line, the message, then a half-close.
 * Response: `SPAMD/1.x <code> <text>`; code 0 is followed by headers
 * (`Spam: True ; 15.0 / 5.0`, `Content-length: <n>`), a blank line and the
 * body (SYMBOLS, REPORT, PROCESS, HEADERS); a non-zero sysexits code comes
 * alone and spamd closes. The body is kept byte for byte.
 */
import net from 'node:net';
import type { Readable } from 'node:stream';
import type { AbortOptions } from '../../core/abort.js';

export type SpamcCommand = 'CHECK' | 'SYMBOLS' | 'REPORT' | 'REPORT_IFSPAM' | 'HEADERS' | 'PROCESS' | 'PING' | 'SKIP';

export interface SpamcOptions {
  /** TCP host; default 127.0.0.1. Ignored when `socket` is given. */
  readonly host?: string;
  /** TCP port; default 783. */
  readonly port?: number;
  /** Unix socket path (spamd --socketpath). */
  readonly socket?: string;
  /** Milliseconds to establish the connection; default 5000. */
  readonly connectTimeout?: number;
  /** Milliseconds for the whole exchange, connect included; default 30000. */
  readonly timeout?: number;
  /** `User:` header: the spamd user whose preferences apply. */
  readonly user?: string;
  /** Largest response accepted, in bytes; default 64 MiB. */
  readonly maxResponse?: number;
  /**
   * Abandons the request (a hook's `ctx.signal`): the socket is destroyed at
   * once and the call rejects with the signal's reason.
   */
  readonly signal?: AbortSignal | undefined;
}

/** The message: a Buffer, or a stream with its exact length known up front. */
export type SpamcInput = Buffer | { readonly stream: Readable; readonly length: number };

export interface SpamcResponse {
  /** `1.1` from `SPAMD/1.1`. */
  readonly version: string;
  /** 0 (EX_OK); non-zero codes are thrown as SpamdError. */
  readonly code: number;
  /** `EX_OK`, `PONG`... */
  readonly message: string;
  /** Response headers by lower-cased name (last one wins). */
  readonly headers: Readonly<Record<string, string>>;
  /** From the `Spam:` header, when present. */
  readonly isSpam?: boolean;
  readonly score?: number;
  readonly threshold?: number;
  /** The body exactly as sent (after the blank line); empty when none. */
  readonly body: Buffer;
}

export interface SpamcResult extends SpamcResponse {
  readonly isSpam: boolean;
  readonly score: number;
  readonly threshold: number;
}

export interface SymbolsResult extends SpamcResult {
  /** Names of the rules that hit. */
  readonly symbols: string[];
}

export type SpamdErrorKind = 'connect' | 'timeout' | 'io' | 'protocol' | 'spamd';

export class SpamdError extends Error {
  override readonly name = 'SpamdError';
  constructor(
    readonly kind: SpamdErrorKind,
    message: string,
    /** The sysexits code spamd answered with (kind `spamd`). */
    readonly code?: number,
  ) {
    super(message);
  }
}

const COMMANDS_WITH_BODY = new Set<SpamcCommand>(['CHECK', 'SYMBOLS', 'REPORT', 'REPORT_IFSPAM', 'HEADERS', 'PROCESS']);

/** Parses `True ; 15.0 / 5.0` (spamd also sends `Yes`/`No` in old versions). */
export function parseSpamHeader(value: string): { isSpam: boolean; score: number; threshold: number } | undefined {
  const m = /^\s*(true|false|yes|no)\s*;\s*(-?\d+(?:\.\d+)?)\s*\/\s*(-?\d+(?:\.\d+)?)\s*$/i.exec(value);
  if (!m) return undefined;
  const flag = m[1]!.toLowerCase();
  return { isSpam: flag === 'true' || flag === 'yes', score: Number(m[2]), threshold: Number(m[3]) };
}

/**
 * Parses a complete spamd response (everything up to spamd's close).
 * Throws SpamdError: `spamd` for a non-zero code, `protocol` for anything malformed.
 */
export function parseResponse(data: Buffer): SpamcResponse {
  const eol = data.indexOf('\r\n');
  if (eol < 0) {
    if (data.length === 0) throw new SpamdError('protocol', 'spamd closed the connection without a response');
    // spamd always ends the status line; an error line cut short still tells the code.
    const partial = /^SPAMD\/(\d+\.\d+) (\d+)(?: (.*))?$/.exec(data.toString('latin1'));
    if (partial && Number(partial[2]) !== 0) throw new SpamdError('spamd', `spamd answered ${partial[2]} ${partial[3] ?? ''}`.trim(), Number(partial[2]));
    throw new SpamdError('protocol', `response without a complete status line: ${JSON.stringify(data.subarray(0, 80).toString('latin1'))}`);
  }
  const status = data.subarray(0, eol).toString('latin1');
  const m = /^SPAMD\/(\d+\.\d+) +(\d+)(?: +(.*))?$/.exec(status);
  if (!m) throw new SpamdError('protocol', `bad status line: ${JSON.stringify(status.slice(0, 80))}`);
  const version = m[1]!;
  const code = Number(m[2]);
  const message = (m[3] ?? '').trim();
  if (code !== 0) throw new SpamdError('spamd', `spamd answered ${code} ${message}`.trim(), code);

  const headers: Record<string, string> = {};
  let pos = eol + 2;
  let body: Buffer = Buffer.alloc(0);
  let sawBlank = false;
  while (pos < data.length) {
    const next = data.indexOf('\r\n', pos);
    if (next < 0) throw new SpamdError('protocol', 'response header without a line end');
    const line = data.subarray(pos, next).toString('latin1');
    pos = next + 2;
    if (line === '') {
      sawBlank = true;
      body = data.subarray(pos);
      break;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw new SpamdError('protocol', `bad response header: ${JSON.stringify(line.slice(0, 80))}`);
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const lengthHeader = headers['content-length'];
  if (lengthHeader !== undefined) {
    if (!/^\d+$/.test(lengthHeader)) throw new SpamdError('protocol', `bad Content-length: ${JSON.stringify(lengthHeader)}`);
    const length = Number(lengthHeader);
    if (body.length < length) throw new SpamdError('protocol', `response body truncated: ${body.length} of ${length} bytes`);
    if (body.length > length) throw new SpamdError('protocol', `response body longer than Content-length: ${body.length} > ${length} bytes`);
  } else if (!sawBlank && pos < data.length) {
    throw new SpamdError('protocol', 'response headers not ended by a blank line');
  }
  const spam = headers.spam !== undefined ? parseSpamHeader(headers.spam) : undefined;
  if (headers.spam !== undefined && !spam) throw new SpamdError('protocol', `bad Spam header: ${JSON.stringify(headers.spam)}`);
  return { version, code, message, headers, ...(spam ?? {}), body };
}

/** Sends one request and returns the parsed response. */
export function spamdRequest(command: SpamcCommand, input: SpamcInput | undefined, options: SpamcOptions = {}): Promise<SpamcResponse> {
  const timeout = options.timeout ?? 30_000;
  const connectTimeout = Math.min(options.connectTimeout ?? 5_000, timeout);
  const maxResponse = options.maxResponse ?? 64 * 1024 * 1024;
  const where = options.socket ? `unix:${options.socket}` : `${options.host ?? '127.0.0.1'}:${options.port ?? 783}`;
  if (COMMANDS_WITH_BODY.has(command) && input === undefined) return Promise.reject(new TypeError(`${command} needs a message`));
  if (options.user !== undefined && /[\r\n]/.test(options.user)) return Promise.reject(new TypeError('User must not contain a line break'));
  const signal = options.signal;
  if (signal?.aborted) return Promise.reject(signal.reason as Error);

  return new Promise<SpamcResponse>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let done = false;
    let connected = false;
    const socket = options.socket
      ? net.createConnection({ path: options.socket })
      : net.createConnection({ host: options.host ?? '127.0.0.1', port: options.port ?? 783 });

    const finish = (err: Error | undefined, value?: SpamcResponse) => {
      if (done) return;
      done = true;
      clearTimeout(connectTimer);
      clearTimeout(totalTimer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (input && !Buffer.isBuffer(input)) input.stream.unpipe(socket);
      if (err) reject(err);
      else resolve(value!);
    };
    const parseNow = () => {
      try {
        finish(undefined, parseResponse(Buffer.concat(chunks)));
      } catch (err) {
        finish(err as Error);
      }
    };

    const connectTimer = setTimeout(() => finish(new SpamdError('timeout', `spamd ${where}: no connection within ${connectTimeout} ms`)), connectTimeout);
    const totalTimer = setTimeout(() => finish(new SpamdError('timeout', `spamd ${where}: no complete answer within ${timeout} ms`)), timeout);
    const onAbort = () => finish(signal!.reason as Error);
    signal?.addEventListener('abort', onAbort, { once: true });

    socket.on('connect', () => {
      connected = true;
      clearTimeout(connectTimer);
      let head = `${command} SPAMC/1.5\r\n`;
      if (input !== undefined) head += `Content-length: ${Buffer.isBuffer(input) ? input.length : input.length}\r\n`;
      if (options.user !== undefined) head += `User: ${options.user}\r\n`;
      head += '\r\n';
      socket.write(head);
      if (input === undefined) {
        socket.end();
      } else if (Buffer.isBuffer(input)) {
        socket.end(input);
      } else {
        let sent = 0;
        input.stream.on('data', (c: Buffer | string) => (sent += typeof c === 'string' ? Buffer.byteLength(c) : c.length));
        input.stream.once('error', (err) => finish(new SpamdError('io', `reading the message for spamd: ${err.message}`)));
        input.stream.once('end', () => {
          if (sent !== input.length) finish(new SpamdError('io', `message stream gave ${sent} bytes, Content-length said ${input.length}`));
        });
        input.stream.pipe(socket);
      }
    });
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      received += c.length;
      if (received > maxResponse) finish(new SpamdError('protocol', `spamd response larger than ${maxResponse} bytes`));
    });
    socket.on('end', parseNow);
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (!connected) return finish(new SpamdError('connect', `spamd ${where}: ${err.code ?? ''} ${err.message}`.trim()));
      // spamd may answer an error and close while we still write (EPIPE, ECONNRESET): its answer counts.
      if (chunks.length > 0) return parseNow();
      finish(new SpamdError('io', `spamd ${where}: ${err.message}`));
    });
  });
}

function requireVerdict(r: SpamcResponse, command: string): SpamcResult {
  if (r.isSpam === undefined || r.score === undefined || r.threshold === undefined) throw new SpamdError('protocol', `${command} response without a Spam header`);
  return r as SpamcResult;
}

/** A spamd client with fixed connection options. */
export class Spamc {
  constructor(readonly options: SpamcOptions = {}) {}

  private with(user: string | undefined, call: AbortOptions | undefined): SpamcOptions {
    if (user === undefined && call?.signal === undefined) return this.options;
    return { ...this.options, ...(user === undefined ? {} : { user }), ...(call?.signal ? { signal: call.signal } : {}) };
  }

  /** `PING` → true when spamd answers PONG. */
  async ping(call?: AbortOptions): Promise<boolean> {
    const r = await spamdRequest('PING', undefined, this.with(undefined, call));
    return r.message === 'PONG';
  }

  /** Score and threshold only. `call.signal` abandons the request (it rejects with the signal's reason). */
  async check(message: SpamcInput, user?: string, call?: AbortOptions): Promise<SpamcResult> {
    return requireVerdict(await spamdRequest('CHECK', message, this.with(user, call)), 'CHECK');
  }

  /** Score, threshold and the names of the rules that hit. */
  async symbols(message: SpamcInput, user?: string, call?: AbortOptions): Promise<SymbolsResult> {
    const r = requireVerdict(await spamdRequest('SYMBOLS', message, this.with(user, call)), 'SYMBOLS');
    const symbols = r.body
      .toString('latin1')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    return { ...r, symbols };
  }

  /** Verdict plus the text report in `body`. */
  async report(message: SpamcInput, user?: string, call?: AbortOptions): Promise<SpamcResult> {
    return requireVerdict(await spamdRequest('REPORT', message, this.with(user, call)), 'REPORT');
  }

  /** Verdict plus the rewritten header section in `body`. */
  async headers(message: SpamcInput, user?: string, call?: AbortOptions): Promise<SpamcResult> {
    return requireVerdict(await spamdRequest('HEADERS', message, this.with(user, call)), 'HEADERS');
  }

  /** Verdict plus the whole rewritten message in `body`. */
  async process(message: SpamcInput, user?: string, call?: AbortOptions): Promise<SpamcResult> {
    return requireVerdict(await spamdRequest('PROCESS', message, this.with(user, call)), 'PROCESS');
  }
}
