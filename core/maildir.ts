/**
 * Maildir delivery as qmail-local does it, with Maildir++'s size suffix:
 * write `tmp/NAME`, fsync, move it to `new/NAME,S=SIZE`, fsync `new/`. The
 * delivery is complete at the move; a crash before it leaves only a tmp file
 * that readers ignore. The move is a rename, not qmail's link + unlink: the
 * name is unique (time, pid, sequence, and the host name, so hosts sharing
 * the Maildirs over NFS never pick the same one), so there is nothing a link
 * could refuse to overwrite, and it is one system call instead of two. A
 * rename is atomic on an NFS server too: readers see the whole file or none.
 *
 * Files are stored with LF line ends, as qmail and vpopmail store them;
 * POP3 turns them back into CRLF on the wire.
 *
 * A message given whole (a Buffer, or a queued message small enough to be
 * read into memory) is converted to LF once and scanned for its header lines
 * once, however many Maildirs it goes to: each copy is then its own top lines
 * (Return-Path, Delivered-To) and the shared body, written in one writev.
 */
import * as fs from 'node:fs';
import { mkdir, rename, unlink } from 'node:fs/promises';
import { promisify } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { DeliveryMessage } from './hooks.js';
import { DirSync, writeAll } from './queue/spool.js';
import { IN_MEMORY_MAX } from './queue/shared-message.js';

const fsOpen = promisify(fs.open);
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

/**
 * One shared fsync per `new/` directory for deliveries that finish together,
 * on a descriptor kept open between deliveries: two calls on libuv's pool
 * (open, close) fewer per delivery. All are let go every NEW_DIR_KEEP_MS,
 * so a Maildir removed and made again meanwhile (its old descriptor would
 * sync the removed directory) is synced through a fresh one within that
 * time, and at most NEW_DIR_KEEP_MAX are open at once.
 */
const newDirSyncs = new Map<string, DirSync>();
const NEW_DIR_KEEP_MS = 5_000;
const NEW_DIR_KEEP_MAX = 64;
let newDirRelease: NodeJS.Timeout | undefined;

function newDirSync(dir: string): DirSync {
  let s = newDirSyncs.get(dir);
  if (!s) {
    if (newDirSyncs.size >= NEW_DIR_KEEP_MAX) releaseNewDirs();
    s = new DirSync(dir, true);
    newDirSyncs.set(dir, s);
    if (!newDirRelease) {
      newDirRelease = setInterval(releaseNewDirs, NEW_DIR_KEEP_MS);
      newDirRelease.unref();
    }
  }
  return s;
}

function releaseNewDirs(): void {
  for (const s of newDirSyncs.values()) void s.close();
  newDirSyncs.clear();
}

export class LoopDetected extends Error {}

export interface MaildirDelivery {
  /** Lines that go on top: Return-Path and Delivered-To, without line ends. */
  readonly topLines: readonly string[];
  /**
   * The message as queued (CRLF): a stream, the whole of it, or the deliver
   * hook's `delivery.message` (taken whole, and so shared with the other
   * recipients of the message, unless it is too large to hold in memory).
   */
  readonly message: Readable | Buffer | DeliveryMessage;
  /** Refuse with LoopDetected when the header already has this exact line (case-insensitive). */
  readonly loopLine?: string;
}

/** Writes are gathered up to this size: a typical message is one write. */
const WRITE_BATCH = 256 * 1024;

/** A whole message made ready for Maildirs once: LF line ends, and its header lines for the loop check. */
interface StoredForm {
  readonly lf: Buffer;
  /** LFs in `lf`: the size on the wire is one more octet per line. */
  readonly lines: number;
  /** Header lines as they are (not unfolded), lower-cased. */
  readonly header: ReadonlySet<string>;
}

/** Keyed by the message Buffer, so every recipient handed the same Buffer shares one conversion. */
const storedForms = new WeakMap<Buffer, StoredForm>();

function storedForm(message: Buffer): StoredForm {
  let form = storedForms.get(message);
  if (form) return form;
  const text = message.toString('latin1');
  const end = text.search(/\r?\n\r?\n/);
  const header = new Set(
    (end < 0 ? text : text.slice(0, end))
      .split(/\r?\n/)
      .map((l) => l.toLowerCase()),
  );
  const lf = Buffer.from(text.replace(/\r\n/g, '\n'), 'latin1');
  form = { lf, lines: countLf(lf), header };
  storedForms.set(message, form);
  return form;
}

function countLf(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) n++;
  return n;
}

function isDeliveryMessage(m: MaildirDelivery['message']): m is DeliveryMessage {
  return !Buffer.isBuffer(m) && typeof (m as Partial<DeliveryMessage>).stream === 'function';
}

/** Delivers one message; returns the file name in new/. */
export async function deliverToMaildir(dir: string, d: MaildirDelivery): Promise<string> {
  let message = d.message;
  if (isDeliveryMessage(message)) message = message.size <= IN_MEMORY_MAX ? await message.read() : message.stream();
  if (!known.has(dir)) await ensureMaildir(dir);
  const name = maildirName();
  const tmp = path.join(dir, 'tmp', name);
  if (Buffer.isBuffer(message)) return deliverWhole(dir, name, tmp, d, storedForm(message));
  const fd = await openTmp(dir, tmp);
  let size = 0;
  /** Size with CRLF line ends, as POP3 sends it: one more octet per LF written. */
  let lines = 0;
  let batch: Buffer[] = [];
  let batched = 0;
  const flush = async () => {
    if (batched) await writeAll(fd, batch, batched);
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
    for await (const chunk of message as AsyncIterable<Buffer>) {
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
  } catch (err) {
    await discard(fd, tmp);
    throw err;
  }
  return settle(fd, dir, name, tmp, size, lines);
}

/**
 * Ends a delivery whose tmp file is written: fdatasync, close, move into
 * new/ under the name that carries its sizes, and sync new/. On failure the
 * tmp file is closed and removed.
 */
async function settle(fd: number, dir: string, name: string, tmp: string, size: number, lines: number): Promise<string> {
  try {
    await fsDatasync(fd);
  } catch (err) {
    await discard(fd, tmp);
    throw err;
  }
  let moved = false;
  try {
    await fsClose(fd);
    // S= is the stored size (Maildir++ quotas), W= the size on the wire with CRLF (POP3 LIST, as Dovecot names it).
    const final = `${name},S=${size},W=${size + lines}`;
    await rename(tmp, path.join(dir, 'new', final));
    moved = true;
    // The queue marks the recipient delivered next: the move must survive a power cut first.
    await newDirSync(path.join(dir, 'new')).sync();
    return final;
  } finally {
    if (!moved) await unlink(tmp).catch(() => undefined);
  }
}

/** A delivery that failed before its file was synced: close and remove the tmp file. */
async function discard(fd: number, tmp: string): Promise<void> {
  await fsClose(fd).catch(() => undefined);
  await unlink(tmp).catch(() => undefined);
}

async function openTmp(dir: string, tmp: string): Promise<number> {
  try {
    return await fsOpen(tmp, 'wx', 0o600);
  } catch (err) {
    // Removed since we last looked (a user cleaning up): make it again, once.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const kept = newDirSyncs.get(path.join(dir, 'new'));
    newDirSyncs.delete(path.join(dir, 'new'));
    void kept?.close();
    await ensureMaildir(dir);
    return fsOpen(tmp, 'wx', 0o600);
  }
}

/** One copy of a message already in its stored form: top lines + shared body, one writev, one fdatasync, one rename. */
async function deliverWhole(dir: string, name: string, tmp: string, d: MaildirDelivery, form: StoredForm): Promise<string> {
  if (d.loopLine && form.header.has(d.loopLine.toLowerCase())) throw new LoopDetected(`already has ${d.loopLine}`);
  const top = Buffer.from(d.topLines.map((l) => `${l}\n`).join(''), 'latin1');
  const size = top.length + form.lf.length;
  const lines = d.topLines.length + form.lines;
  const fd = await openTmp(dir, tmp);
  try {
    await writeAll(fd, [top, form.lf], size);
  } catch (err) {
    await discard(fd, tmp);
    throw err;
  }
  return settle(fd, dir, name, tmp, size, lines);
}
