/**
 * The main thread's end of the syslog writer (transport.ts, in a worker
 * thread): the stream pino writes to besides stdout.
 */
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import type { SyslogFacility } from './format.js';
import type { SyslogTransportOptions } from './transport.js';

export interface SyslogOptions {
  /** The local syslog's socket (absolute): /dev/log. */
  readonly socket: string;
  readonly facility: SyslogFacility;
  /** Each line's tag, TAG[PID]. */
  readonly tag: string;
}

const TRANSPORT = fileURLToPath(new URL('./transport.js', import.meta.url));

/** A stream taking pino's JSON lines; a syslog writer that fails is said once on stderr and never stops the server. */
export function syslogStream(options: SyslogOptions): NodeJS.WritableStream {
  const stream = pino.transport<SyslogTransportOptions>({ target: TRANSPORT, options: { ...options, pid: process.pid } });
  let told = false;
  stream.on('error', (err: Error) => {
    if (told) return;
    told = true;
    process.stderr.write(`yubin: syslog: ${err.message}; the server goes on without syslog\n`);
  });
  return stream as unknown as NodeJS.WritableStream;
}
