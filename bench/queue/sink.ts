/**
 * Postfix's smtp-sink as the remote end of the remote-delivery benchmark:
 * one process on 127.0.0.1:PORT that takes every message and throws it away.
 * With -c it prints running counters (`sess=N quit=N mesg=N`, CR-separated)
 * on stdout, which goes to a file; the message count is the last mesg=.
 */
import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { freePort, sleep, stopChild } from '../smtp-accept/proc.js';
import { greetingOrKill, spawnToFile, tail } from '../smtp-accept/servers.js';

export const SMTP_SINK = '/usr/sbin/smtp-sink';

export class SmtpSink {
  private constructor(
    readonly port: number,
    private readonly child: ChildProcess,
    private readonly out: string,
  ) {}

  get pid(): number {
    return this.child.pid!;
  }

  /** Starts smtp-sink in dir on a free loopback port; resolves once it greets. */
  static async start(dir: string): Promise<SmtpSink> {
    if (!existsSync(SMTP_SINK)) throw new Error(`${SMTP_SINK} is missing (Debian package postfix)`);
    const port = await freePort();
    const out = path.join(dir, 'smtp-sink.out');
    // -u: it must drop root; backlog 1000; up to 256 connections at once (its default -m).
    const child = spawnToFile(SMTP_SINK, ['-c', '-4', '-u', 'nobody', `127.0.0.1:${port}`, '1000'], out, process.env, dir);
    await greetingOrKill(child, port, out);
    return new SmtpSink(port, child, out);
  }

  /** Messages received so far (transactions that reached the final dot). */
  messages(): number {
    let fd: number;
    try {
      fd = openSync(this.out, 'r');
    } catch {
      return 0;
    }
    try {
      const size = fstatSync(fd).size;
      const len = Math.min(size, 4096);
      const buf = Buffer.alloc(len);
      readSync(fd, buf, 0, len, size - len);
      const all = [...buf.toString('latin1').matchAll(/mesg=(\d+)/g)];
      return all.length ? Number(all[all.length - 1]![1]) : 0;
    } finally {
      closeSync(fd);
    }
  }

  /** Waits until the count stops moving (the last connection's dot is counted before its QUIT). */
  async settle(ms = 300): Promise<number> {
    let last = this.messages();
    for (;;) {
      await sleep(ms);
      const now = this.messages();
      if (now === last) return now;
      last = now;
    }
  }

  stop(): Promise<void> {
    return stopChild(this.child, 'SIGTERM', 5000);
  }

  logTail(): string {
    return tail(this.out).replace(/\r/g, '\n').split('\n').slice(-5).join('\n');
  }
}
