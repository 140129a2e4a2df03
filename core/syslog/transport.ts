/**
 * The syslog writer: a pino transport, so it runs in its own worker thread
 * and the SMTP path pays only for handing the line over (pino serialises it
 * for stdout anyway); the sentences are made here.
 *
 * Node has no Unix datagram sockets, and /dev/log is one: the lines go
 * through one long-running util-linux `logger` (`--prio-prefix`, one line per
 * message, `<PRI>` first), which stamps each with the local time as syslog's
 * classic format has it. When logger cannot write (no socket, the daemon
 * gone or restarted), it exits: that is said once on stderr, the lines are
 * dropped and counted, and logger is run again after 1 s, 2 s, 4 s… up to a
 * minute; once it holds, stderr and syslog are told how many lines were lost.
 * Nothing here ever waits on syslog: a logger that cannot keep up has its
 * lines dropped past 1 MB waiting.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Writable } from 'node:stream';
import { oneLine, priority, SEVERITY, severityOf, SyslogFormatter, type LogRecord, type SyslogFacility } from './format.js';

export interface SyslogTransportOptions {
  /** The local syslog's socket: /dev/log. */
  readonly socket: string;
  readonly facility: SyslogFacility;
  readonly tag: string;
  /** The server's PID, shown as TAG[PID]. */
  readonly pid: number;
  /** The program to run; default util-linux `logger`. */
  readonly command?: string;
  /** First wait before logger is run again; it doubles up to maxBackoffMs. */
  readonly backoffMs?: number;
  readonly maxBackoffMs?: number;
}

/** logger with --socket-errors=on exits at once when it cannot connect: one that runs this long holds. */
const HOLDS_MS = 1_000;
/** Bytes waiting in logger's stdin past which lines are dropped rather than kept. */
const MAX_WAITING = 1 << 20;
/** How long a closing logger gets to send what it has read. */
const CLOSE_MS = 2_000;

/** One util-linux logger at a time, run again with backoff whenever it stops. */
export class LoggerProcess {
  private child: ChildProcess | undefined;
  private backoff: number;
  private restart: NodeJS.Timeout | undefined;
  private holding: NodeJS.Timeout | undefined;
  /** Told on stderr that syslog is out; not yet that it is back. */
  private out = false;
  private slowTold = false;
  private closing = false;
  /** Lines dropped since syslog went out. */
  dropped = 0;

  constructor(
    private readonly options: SyslogTransportOptions,
    private readonly warn: (text: string) => void = (text) => void process.stderr.write(`yubin: syslog: ${text}\n`),
  ) {
    this.backoff = options.backoffMs ?? 1_000;
    this.start();
  }

  private get command(): string {
    return this.options.command ?? 'logger';
  }

  private start(): void {
    this.restart = undefined;
    const o = this.options;
    const args = ['--socket', o.socket, '--socket-errors=on', '--prio-prefix', '--tag', o.tag, `--id=${o.pid}`, '--size', '8192'];
    let child: ChildProcess;
    try {
      child = spawn(this.command, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    } catch (err) {
      this.stopped(`cannot run ${this.command}: ${(err as Error).message}`);
      return;
    }
    this.child = child;
    let said = '';
    let over = false;
    const end = (why: string) => {
      if (over) return;
      over = true;
      if (this.child === child) this.stopped(why);
    };
    child.stdin!.on('error', () => undefined);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      if (said.length < 500) said += d;
    });
    child.on('error', (err) => end(`cannot run ${this.command}: ${err.message}`));
    child.on('close', (code, signal) => end(said.trim().split('\n')[0] || `${this.command} exited (${signal ?? `status ${code}`})`));
    this.holding = setTimeout(() => this.holds(), HOLDS_MS);
  }

  private stopped(why: string): void {
    this.child = undefined;
    clearTimeout(this.holding);
    if (this.closing) return;
    if (!this.out) {
      this.out = true;
      this.warn(`${why}; the server goes on, and its syslog lines are dropped until ${this.options.socket} takes them again (trying again with backoff)`);
    }
    this.restart = setTimeout(() => this.start(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, this.options.maxBackoffMs ?? 60_000);
  }

  private holds(): void {
    this.backoff = this.options.backoffMs ?? 1_000;
    if (!this.out) return;
    this.out = false;
    const lost = this.dropped ? `; ${this.dropped} lines were dropped while it was out` : '';
    this.warn(`writing to ${this.options.socket} again${lost}`);
    if (this.dropped) this.send([`<${priority(this.options.facility, SEVERITY.warning)}>syslog: ${this.dropped} lines were dropped while ${this.options.socket} could not be written\n`]);
    this.dropped = 0;
  }

  /** Lines, each `<PRI>` first and a newline last, in one write; dropped when logger is not there or cannot keep up. */
  send(lines: readonly string[]): void {
    if (!lines.length) return;
    const stdin = this.child?.stdin;
    if (!stdin || !stdin.writable) {
      this.dropped += lines.length;
      return;
    }
    if (stdin.writableLength > MAX_WAITING) {
      this.dropped += lines.length;
      if (!this.slowTold) {
        this.slowTold = true;
        this.warn(`${this.command} cannot keep up; lines are dropped while more than 1 MB waits`);
      }
      return;
    }
    stdin.write(lines.join(''));
  }

  /** Lets logger send what it has, within CLOSE_MS. */
  close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.restart);
    clearTimeout(this.holding);
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGTERM');
        resolve();
      }, CLOSE_MS);
      child.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      child.stdin!.end();
    });
  }
}

/** The stream pino's worker writes the JSON lines to. */
export default function syslogTransport(options: SyslogTransportOptions): Writable {
  const formatter = new SyslogFormatter();
  const logger = new LoggerProcess(options);
  let rest = '';
  /** The syslog line for one JSON line, if it gives one. */
  const handle = (line: string): string | undefined => {
    if (!line.trim()) return undefined;
    let rec: LogRecord;
    try {
      const parsed: unknown = JSON.parse(line);
      rec = parsed && typeof parsed === 'object' ? (parsed as LogRecord) : { msg: line };
    } catch {
      rec = { msg: line };
    }
    let text: string | undefined;
    try {
      text = formatter.format(rec);
    } catch {
      // A record the formatter trips on still gets its line.
      text = oneLine(typeof rec.msg === 'string' ? rec.msg : line);
    }
    return text === undefined ? undefined : `<${priority(options.facility, severityOf(rec.level))}>${text}\n`;
  };
  /** What pino handed over at once goes to logger in one write. */
  const send = (lines: readonly string[]) => logger.send(lines.map(handle).filter((l): l is string => l !== undefined));
  return new Writable({
    decodeStrings: false,
    write(chunk: string | Buffer, _encoding, callback) {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop()!;
      send(lines);
      callback();
    },
    final(callback) {
      send([rest]);
      rest = '';
      logger.close().then(() => callback());
    },
  });
}
