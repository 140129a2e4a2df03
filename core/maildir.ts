/**
 * Maildir delivery as qmail-local does it, with Maildir++'s size suffix:
 * write `tmp/NAME`, fsync, link it to `new/NAME,S=SIZE`, unlink the tmp
 * name. The delivery is complete at the link; a crash before it leaves only
 * a tmp file that readers ignore.
 *
 * Files are stored with LF line ends, as qmail and vpopmail store them;
 * POP3 turns them back into CRLF on the wire.
 */
import * as fs from 'node:fs';
import { link, mkdir, unlink } from 'node:fs/promises';
import { promisify } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { DirSync } from './queue/spool.js';

const fsOpen = promisify(fs.open);
const fsWritev = promisify(fs.writev);
const fsWrite = promisify(fs.write);
const fsDatasync = promisify(fs.fdatasync);
const fsClose = promisify(fs.close);

let seq = 0;
/** The host part of file names, with `/` and `:` escaped as Maildir readers expect. */
const HOST = os.hostname().replace(/\//g, '\\057').replace(/:/g, '\\072');

/** `time.M<usec>P<pid>Q<seq>.<host>`: unique on this host even within one microsecond. */
export function maildirName(now = Date.now()): string {
  seq = (seq + 1) % 1_000_000;
  const host = HOST;
  const usec = Math.floor((performance.timeOrigin * 1000 + performance.now() * 1000) % 1_000_000);
  return `${Math.floor(now / 1000)}.M${usec}P${process.pid}Q${seq}.${host}`;
}

/** Maildirs known to exist, so a delivery does not re-create its directories every time. */
const known = new Set<string>();
const KNOWN_MAX = 10_000;

export async function ensureMaildir(dir: string): Promise<void> {
  for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(dir, sub), { recursive: true, mode: 0o700 });
  if (known.size >= KNOWN_MAX) known.clear();
  known.add(dir);
}

/** One shared fsync per `new/` directory for deliveries that finish together. */
const newDirSyncs = new Map<string, DirSync>();

function newDirSync(dir: string): DirSync {
  let s = newDirSyncs.get(dir);
  if (!s) {
    if (newDirSyncs.size >= KNOWN_MAX) newDirSyncs.clear();
    s = new DirSync(dir);
    newDirSyncs.set(dir, s);
  }
  return s;
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

/** Writes are gathered up to this size: a typical message is one write. */
const WRITE_BATCH = 256 * 1024;

/** Delivers one message; returns the file name in new/. */
export async function deliverToMaildir(dir: string, d: MaildirDelivery): Promise<string> {
  if (!known.has(dir)) await ensureMaildir(dir);
  const name = maildirName();
  const tmp = path.join(dir, 'tmp', name);
  let fd: number;
  try {
    fd = await fsOpen(tmp, 'wx', 0o600);
  } catch (err) {
    // Removed since we last looked (a user cleaning up): make it again, once.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await ensureMaildir(dir);
    fd = await fsOpen(tmp, 'wx', 0o600);
  }
  let size = 0;
  /** Size with CRLF line ends, as POP3 sends it: one more octet per LF written. */
  let lines = 0;
  let linked = false;
  let closed = false;
  let batch: Buffer[] = [];
  let batched = 0;
  const flush = async () => {
    if (batched) {
      const written = (await fsWritev(fd, batch)).bytesWritten;
      // A regular file takes the whole writev unless the disk fills; finish a short one byte-exact.
      if (written < batched) {
        const rest = Buffer.concat(batch).subarray(written);
        for (let off = 0; off < rest.length; ) off += (await fsWrite(fd, rest, off, rest.length - off, null)).bytesWritten;
      }
    }
    batch = [];
    batched = 0;
  };
  const add = async (b: Buffer) => {
    batch.push(b);
    batched += b.length;
    size += b.length;
    for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) lines++;
    if (batched >= WRITE_BATCH) await flush();
  };
  try {
    await add(Buffer.from(d.topLines.map((l) => `${l}\n`).join('')));
    const loop = d.loopLine?.toLowerCase();
    let inHeader = true;
    let carry = '';
    let pendingCr = false;
    for await (const chunk of d.message as AsyncIterable<Buffer>) {
      let text = chunk.toString('latin1');
      if (pendingCr) text = '\r' + text;
      pendingCr = text.endsWith('\r');
      if (pendingCr) text = text.slice(0, -1);
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
      await add(Buffer.from(text.replace(/\r\n/g, '\n'), 'latin1'));
    }
    if (pendingCr) await add(Buffer.from('\r'));
    await flush();
    await fsDatasync(fd);
    closed = true;
    await fsClose(fd);
    // S= is the stored size (Maildir++ quotas), W= the size on the wire with CRLF (POP3 LIST, as Dovecot names it).
    const final = `${name},S=${size},W=${size + lines}`;
    await link(tmp, path.join(dir, 'new', final));
    linked = true;
    await unlink(tmp);
    // The queue marks the recipient delivered next: the link must survive a power cut first.
    await newDirSync(path.join(dir, 'new')).sync();
    return final;
  } finally {
    if (!closed) await fsClose(fd).catch(() => undefined);
    if (!linked) await unlink(tmp).catch(() => undefined);
  }
}
