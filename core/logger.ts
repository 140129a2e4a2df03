/**
 * pino, one JSON line per decision; pretty when a person is watching a terminal.
 * YUBIN_LOG_FORMAT=json forces JSON, =pretty forces pretty.
 */
import { pino, type Logger, type Level } from 'pino';
import pretty from 'pino-pretty';
import { journalStream } from './journal/stream.js';
import type { JournalTransportOptions } from './journal/transport.js';
import { syslogStream, type SyslogOptions } from './syslog/stream.js';

export type { Logger } from 'pino';

export interface LoggerOptions {
  readonly level?: Level;
  readonly destination?: NodeJS.WritableStream;
  /** Default: YUBIN_LOG_FORMAT, else pretty on a terminal and JSON elsewhere. */
  readonly format?: 'json' | 'pretty';
  /** Also keep every decision in the journal (dataDir/journal.sqlite), written in a worker thread. */
  readonly journal?: JournalTransportOptions;
  /** Also send each line, as a sentence, to the local syslog (written in a worker thread). */
  readonly syslog?: SyslogOptions;
  /** A cluster worker's number (1..N), on every line it writes. */
  readonly worker?: number;
}

/** pino's isoTime, formatted once per millisecond: a busy server writes several lines in each. */
function isoTimeCached(): () => string {
  let last = -1;
  let text = '';
  return () => {
    const now = Date.now();
    if (now !== last) {
      last = now;
      text = `,"time":"${new Date(now).toISOString()}"`;
    }
    return text;
  };
}

export function createLogger({ level = 'info', destination = process.stdout, format, journal, syslog, worker }: LoggerOptions = {}): Logger {
  const isTty = (destination as NodeJS.WriteStream).isTTY === true;
  const chosen = format ?? process.env.YUBIN_LOG_FORMAT;
  const usePretty = chosen === 'pretty' || (chosen !== 'json' && isTty);
  const options = { level, base: worker === undefined ? { pid: process.pid } : { pid: process.pid, worker }, timestamp: isoTimeCached() };
  const main = usePretty ? pretty({ destination, colorize: isTty, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true }) : destination;
  if (!journal && !syslog) return pino(options, main);
  const streams: pino.StreamEntry[] = [{ stream: main, level }];
  // The journal wants every decision (info) whatever the terminal shows.
  if (journal) streams.push({ stream: journalStream(journal), level: 'info' });
  // Syslog gets the same lines as stdout, at the same level; stdout's stay as they are.
  if (syslog) streams.push({ stream: syslogStream(syslog), level });
  return pino({ ...options, level: journal && pino.levels.values[level]! > pino.levels.values.info! ? 'info' : level }, pino.multistream(streams));
}
