/**
 * One `yubin serve` process of the crash rig: spawned with JSON logs, its
 * listening port read from its own `listen` line (port 0 in the config, so
 * every start has a new one), killed with SIGKILL by its PID or stopped with
 * SIGTERM. Its stdout and stderr go to files in the run directory; the
 * lines that matter here (listen, ready, warnings and errors, delivery
 * results) are also read as they arrive.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import path from 'node:path';

/** What a server's log said, summed over every start of the run. */
export interface LogCounts {
  /** `delivery` lines with result success / deferral / failure. */
  deliverySuccess: number;
  deliveryDeferral: number;
  deliveryFailure: number;
  bounces: number;
  /** Lines at level warn (40) and error (50) or above. */
  warnings: number;
  errors: number;
  /** The first few warning and error lines, for the report. */
  samples: string[];
}

export function emptyLogCounts(): LogCounts {
  return { deliverySuccess: 0, deliveryDeferral: 0, deliveryFailure: 0, bounces: 0, warnings: 0, errors: 0, samples: [] };
}

export interface ServerOptions {
  readonly cli: string;
  readonly config: string;
  readonly logDir: string;
  /** Number of this start (1-based), for the log file names. */
  readonly n: number;
  readonly counts: LogCounts;
  readonly onChild?: (child: ChildProcess) => void;
}

const MAX_SAMPLES = 20;

export class ServerProcess {
  readonly child: ChildProcess;
  readonly spawnedAt = performance.now();
  /** The SMTP listener's port once it is bound. */
  port: number | undefined;
  listenAt: number | undefined;
  readyAt: number | undefined;
  /** We sent the signal that ended it (SIGKILL or SIGTERM). */
  killedByUs = false;
  exitCode: number | null | undefined;
  /** Wall-clock milliseconds when it exited. */
  endedAt: number | undefined;
  exitSignal: NodeJS.Signals | null | undefined;
  readonly exited: Promise<void>;
  /** Also its pipes are drained: nothing more will be logged. */
  private readonly closed: Promise<void>;
  private stderrTail = '';
  private buf = '';
  private readonly out: WriteStream;
  private readonly err: WriteStream;
  private readonly waiters = new Set<() => void>();

  constructor(private readonly opts: ServerOptions) {
    const name = `server-${String(opts.n).padStart(3, '0')}`;
    this.out = createWriteStream(path.join(opts.logDir, `${name}.log`));
    this.err = createWriteStream(path.join(opts.logDir, `${name}.err`));
    this.child = spawn(process.execPath, [opts.cli, 'serve', '--config', opts.config], {
      env: { ...process.env, YUBIN_LOG_FORMAT: 'json' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    opts.onChild?.(this.child);
    this.child.stdout!.on('data', (d: Buffer) => {
      if (!this.out.writableEnded) this.out.write(d);
      this.onStdout(d.toString('utf8'));
    });
    this.child.stderr!.on('data', (d: Buffer) => {
      if (!this.err.writableEnded) this.err.write(d);
      this.stderrTail = (this.stderrTail + d.toString('utf8')).slice(-4000);
    });
    this.closed = new Promise<void>((resolve) => {
      this.child.once('close', () => resolve());
      this.child.once('error', () => resolve());
    });
    this.exited = new Promise<void>((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.endedAt = Date.now();
        this.exitCode = code;
        this.exitSignal = signal;
        this.notify();
        resolve();
      });
      this.child.once('error', (err) => {
        this.stderrTail += `\nspawn failed: ${err.message}`;
        this.exitCode = -1;
        this.notify();
        resolve();
      });
    });
  }

  get n(): number {
    return this.opts.n;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return this.exitCode === undefined;
  }

  /** stderr's last line, for a one-line error. */
  get lastError(): string {
    const lines = this.stderrTail.trim().split('\n').filter(Boolean);
    return lines[lines.length - 1] ?? '';
  }

  /** Resolves once the listener is bound; rejects if the process ends first or after the timeout. */
  waitListening(timeoutMs: number): Promise<number> {
    return this.waitFor(() => this.port, 'bind its SMTP listener', timeoutMs);
  }

  /** Resolves once the server logged `ready`. */
  async waitReady(timeoutMs: number): Promise<void> {
    await this.waitFor(() => (this.readyAt !== undefined ? true : undefined), 'become ready', timeoutMs);
  }

  /** kill -9, by PID; resolves once it is gone. */
  async kill9(): Promise<void> {
    if (this.alive) {
      this.killedByUs = true;
      this.child.kill('SIGKILL');
    }
    await this.closeLogsAfter(this.exited);
  }

  /** SIGTERM (a clean stop), SIGKILL after graceMs. */
  async stop(graceMs: number): Promise<void> {
    if (this.alive) {
      this.killedByUs = true;
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    await this.closeLogsAfter(this.exited);
  }

  private async closeLogsAfter(p: Promise<void>): Promise<void> {
    await p;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000)))]);
    clearTimeout(timer);
    await Promise.all([this.out, this.err].map((s) => new Promise<void>((resolve) => s.end(() => resolve()))));
  }

  private waitFor<T>(get: () => T | undefined, what: string, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = () => {
        const v = get();
        if (v !== undefined) {
          done();
          resolve(v);
        } else if (!this.alive) {
          done();
          const how = this.exitSignal ? `was killed by ${this.exitSignal}` : `exited with code ${this.exitCode}`;
          reject(new Error(`yubin serve ${how} before it could ${what}${this.lastError ? `: ${this.lastError}` : ''}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`yubin serve did not ${what} within ${timeoutMs} ms${this.lastError ? `: ${this.lastError}` : ''}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  private onStdout(text: string): void {
    this.buf += text;
    let i: number;
    let changed = false;
    while ((i = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, i);
      this.buf = this.buf.slice(i + 1);
      changed = this.onLine(line) || changed;
    }
    if (changed) this.notify();
  }

  /** Reads one log line; true when it changed the port or readiness. Cheap tests first: most lines are per-connection noise. */
  private onLine(line: string): boolean {
    const c = this.opts.counts;
    if (line.includes('"event":"delivery"')) {
      if (line.includes('"result":"success"')) c.deliverySuccess++;
      else if (line.includes('"result":"deferral"')) c.deliveryDeferral++;
      else if (line.includes('"result":"failure"')) c.deliveryFailure++;
    }
    if (line.includes('"event":"bounce"')) c.bounces++;
    const level = /"level":(\d+)/.exec(line);
    if (level && Number(level[1]) >= 40) {
      if (Number(level[1]) >= 50) c.errors++;
      else c.warnings++;
      if (c.samples.length < MAX_SAMPLES) c.samples.push(`[start ${this.opts.n}] ${line.slice(0, 400)}`);
    }
    if (line.includes('"event":"listen"') && this.port === undefined) {
      try {
        const rec = JSON.parse(line) as { port?: unknown; protocol?: unknown };
        if (typeof rec.port === 'number') {
          this.port = rec.port;
          this.listenAt = performance.now();
          return true;
        }
      } catch {
        // not JSON after all
      }
    }
    if (line.includes('"event":"ready"')) {
      this.readyAt = performance.now();
      return true;
    }
    return false;
  }
}
