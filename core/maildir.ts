/**
 * Maildir delivery as qmail-local does it, with Maildir++'s size suffix:
 * write `tmp/NAME`, fsync, link it to `new/NAME,S=SIZE`, unlink the tmp
 * name. The delivery is complete at the link; a crash before it leaves only
 * a tmp file that readers ignore.
 *
 * Files are stored with LF line ends, as qmail and vpopmail store them;
 * POP3 turns them back into CRLF on the wire.
 */
import { link, mkdir, open, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fsyncPath } from './queue/spool.js';

let seq = 0;

/** `time.M<usec>P<pid>Q<seq>.<host>`: unique on this host even within one microsecond. */
export function maildirName(now = Date.now()): string {
  seq = (seq + 1) % 1_000_000;
  const host = os.hostname().replace(/\//g, '\\057').replace(/:/g, '\\072');
  const usec = Math.floor((performance.timeOrigin * 1000 + performance.now() * 1000) % 1_000_000);
  return `${Math.floor(now / 1000)}.M${usec}P${process.pid}Q${seq}.${host}`;
}

export async function ensureMaildir(dir: string): Promise<void> {
  for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(dir, sub), { recursive: true, mode: 0o700 });
}

export class LoopDetected extends Error {}

export interface MaildirDelivery {
  /** Lines that go on top: Return-Path and Delivered-To, without line ends. */
  readonly topLines: readonly string[];
  /** The message as queued (CRLF). */
  readonly message: Readable;
  /** Refuse with LoopDetected when the header already has this exact line (case-insensitive). */
  readonly loopLine?: string;
}

/** Delivers one message; returns the file name in new/. */
export async function deliverToMaildir(dir: string, d: MaildirDelivery): Promise<string> {
  await ensureMaildir(dir);
  const name = maildirName();
  const tmp = path.join(dir, 'tmp', name);
  const fh = await open(tmp, 'wx', 0o600);
  let size = 0;
  let linked = false;
  try {
    const top = Buffer.from(d.topLines.map((l) => `${l}\n`).join(''));
    await fh.write(top);
    size += top.length;
    const loop = d.loopLine?.toLowerCase();
    let inHeader = true;
    let carry = '';
    let pendingCr = false;
    for await (const chunk of d.message as AsyncIterable<Buffer>) {
      let text = chunk.toString('latin1');
      if (pendingCr) text = '\r' + text;
      pendingCr = text.endsWith('\r');
      if (pendingCr) text = text.slice(0, -1);
      const lf = Buffer.from(text.replace(/\r\n/g, '\n'), 'latin1');
      if (inHeader && loop) {
        // Scan the header section for our own Delivered-To line.
        carry += text;
        const lines = carry.split(/\r?\n/);
        carry = lines.pop() ?? '';
        for (const line of lines) {
          if (line === '') {
            inHeader = false;
            break;
          }
          if (line.toLowerCase() === loop) throw new LoopDetected(`already has ${d.loopLine}`);
        }
      }
      await fh.write(lf);
      size += lf.length;
    }
    if (pendingCr) {
      await fh.write(Buffer.from('\r'));
      size += 1;
    }
    await fh.sync();
    const final = `${name},S=${size}`;
    await link(tmp, path.join(dir, 'new', final));
    linked = true;
    await unlink(tmp);
    // The queue marks the recipient delivered next: the link must survive a power cut first.
    await fsyncPath(path.join(dir, 'new'));
    return final;
  } finally {
    await fh.close().catch(() => undefined);
    if (!linked) await unlink(tmp).catch(() => undefined);
  }
}
