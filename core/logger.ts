/**
 * pino, one JSON line per decision; pretty when a person is watching a terminal.
 * YUBIN_LOG_FORMAT=json forces JSON, =pretty forces pretty.
 */
import { pino, type Logger, type Level } from 'pino';
import pretty from 'pino-pretty';

export type { Logger } from 'pino';

export interface LoggerOptions {
  readonly level?: Level;
  readonly destination?: NodeJS.WritableStream;
  /** Default: YUBIN_LOG_FORMAT, else pretty on a terminal and JSON elsewhere. */
  readonly format?: 'json' | 'pretty';
}

export function createLogger({ level = 'info', destination = process.stdout, format }: LoggerOptions = {}): Logger {
  const isTty = (destination as NodeJS.WriteStream).isTTY === true;
  const chosen = format ?? process.env.YUBIN_LOG_FORMAT;
  const usePretty = chosen === 'pretty' || (chosen !== 'json' && isTty);
  const options = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (!usePretty) return pino(options, destination);
  return pino(options, pretty({ destination, colorize: isTty, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true }));
}
