/**
 * pino, one JSON line per decision; pretty when a person is watching a terminal.
 * YUBIN_LOG_FORMAT=json forces JSON, =pretty forces pretty.
 */
import { pino, type Logger, type Level } from 'pino';
import pretty from 'pino-pretty';
import { syslogStream, type SyslogOptions } from './syslog/stream.js';

export type { Logger } from 'pino';

export interface LoggerOptions {
  readonly level?: Level;
  readonly destination?: NodeJS.WritableStream;
  /** Default: YUBIN_LOG_FORMAT, else pretty on a terminal and JSON elsewhere. */
  readonly format?: 'json' | 'pretty';
  /** Also send each line, as a sentence, to the local syslog (written in a worker thread). */
  readonly syslog?: SyslogOptions;
}

export function createLogger({ level = 'info', destination = process.stdout, format, syslog }: LoggerOptions = {}): Logger {
  const isTty = (destination as NodeJS.WriteStream).isTTY === true;
  const chosen = format ?? process.env.YUBIN_LOG_FORMAT;
  const usePretty = chosen === 'pretty' || (chosen !== 'json' && isTty);
  const options = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  const main = usePretty ? pretty({ destination, colorize: isTty, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true }) : destination;
  if (!syslog) return pino(options, main);
  // The same lines as stdout, at the same level; stdout's stay as they are.
  return pino(options, pino.multistream([
    { stream: main, level },
    { stream: syslogStream(syslog), level },
  ]));
}
