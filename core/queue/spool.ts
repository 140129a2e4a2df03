/**
 * The spool: where an accepted message becomes durable before the client
 * hears 250, with qmail's promise that nothing acknowledged is ever lost.
 *
 * `tmp/ID` is created when a message begins; the message is held in memory
 * while it arrives and streamed into the file only once it outgrows
 * SMALL_MESSAGE. Commit appends the envelope as a trailer (JSON, then a
 * fixed-size footer giving its length), so a small message reaches the disk
 * in one write, then fdatasyncs the file once, renames it to `mess/ID` and
 * fsyncs the `mess` directory. The rename is the commit point: whatever is in
 * `mess/` is whole, whatever is in `tmp/` was never acknowledged. One file,
 * one data sync per message; qmail needed two (mess and intd) and a link.
 *
 * Group commit: the directory fsync is shared. Transactions that reach it
 * while one is in flight wait for the next, and that one covers them all, so
 * N sessions finishing together cost one directory sync, not N. The per-file
 * syncs run concurrently on libuv's pool and the filesystem's journal merges
 * them.
 *
 * Delivery state lives beside the message in `state/ID.json` (written
 * atomically, see QueueState); the envelope itself is never rewritten.
 */
import * as fs from 'node:fs';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Committed } from './recent-commits.js';

export interface EnvelopeAddress {
  readonly address: string;
  readonly params: Readonly<Record<string, string | true>>;
}

/** Why a message exists: a bounce's own failure is handled differently (double and triple bounces). */
export type MessageKind = 'message' | 'bounce' | 'double-bounce';

export interface Envelope {
  readonly id: string;
  /** '' for the null sender. */
  readonly sender: string;
  readonly senderParams: Readonly<Record<string, string | true>>;
  readonly recipients: readonly EnvelopeAddress[];
  /** Milliseconds since the epoch: the message's birth for the retry schedule. */
  readonly received: number;
  /** The listener that took it, or `sendmail` / `bounce` for injected mail. */
  readonly listener: string;
  readonly remoteIp: string;
  readonly heloName: string | undefined;
  readonly authUser: string | undefined;
  /** Header lines (CRLF-terminated) that go on top of the stored message. */
  readonly prependHeaders: string;
  /** Size of the stored message file. */
  readonly size: number;
  /** Absent in envelopes written before bounces existed: a plain message. */
  readonly kind?: MessageKind;
  /**
   * The message says `TLS-Required: No` (RFC 8689 5): its sender prefers
   * delivery to the recipient domain's MTA-STS and DANE policies, so those are
   * not applied to it. Never set for a REQUIRETLS message (4.1: REQUIRETLS wins).
   */
  readonly tlsOptional?: true;
}

export type RecipientStatus = 'pending' | 'delivered' | 'failed';

/** One recipient's delivery state; the array in QueueState follows the envelope's order. */
export interface RecipientState {
  readonly address: string;
  status: RecipientStatus;
  attempts: number;
  /** Milliseconds since the epoch; the next try is due at or after this. */
  next: number;
  lastAttempt?: number;
  /** Last failure text, as it appears in `queue list` and in a bounce. */
  error?: string;
  /** RFC 3464 fields for the bounce. */
  dsnStatus?: string;
  remoteMta?: string;
  diagnostic?: string;
  /** A delivered recipient whose sender asked for a success notice (NOTIFY=SUCCESS), and what it will say. */
  notified?: 'delivered' | 'relayed';
  /** A failed recipient that a bounce (or the log, for a triple bounce) has reported; a delivered one whose success notice went out. */
  reported?: boolean;
}

export interface QueueState {
  recipients: RecipientState[];
  /** Set by `yubin queue bounce` while the server is down: bounce everything pending at start. */
  bounceRequested?: boolean;
  /** A delay notice went out. */
  warned?: boolean;
}

/** The state of a message nothing has been tried for: every recipient pending, due at arrival. */
export function initialState(envelope: Envelope): QueueState {
  return { recipients: envelope.recipients.map((r) => ({ address: r.address, status: 'pending', attempts: 0, next: envelope.received })) };
}

/** Shares one fsync of a directory among everyone who asks while another is in flight. */
export class DirSync {
  private inFlight: Promise<void> | undefined;
  private waiting: Promise<void> | undefined;
  private fd: number | undefined;
  /** Syncs done and callers served: their ratio is the batching achieved. */
  syncs = 0;
  requests = 0;

  /** `keepOpen`: hold the directory open between syncs (the spool's few directories, not every Maildir). */
  constructor(
    private readonly dir: string,
    private readonly keepOpen = false,
  ) {}

  sync(): Promise<void> {
    this.requests++;
    return this.join();
  }

  /** Lets go of a kept descriptor once the syncs asked for so far are done (a later sync opens it again). */
  async close(): Promise<void> {
    await (this.waiting ?? this.inFlight)?.catch(() => undefined);
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) await fsClose(fd).catch(() => undefined);
  }

  private join(): Promise<void> {
    if (this.waiting) return this.waiting;
    if (!this.inFlight) {
      this.inFlight = this.run().finally(() => (this.inFlight = undefined));
      return this.inFlight;
    }
    // Whoever arrives now was not covered by the sync in flight: wait for the next one, together.
    this.waiting = this.inFlight
      .catch(() => undefined)
      .then(() => {
        this.waiting = undefined;
        return this.join();
      });
    return this.waiting;
  }

  private async run(): Promise<void> {
    this.syncs++;
    if (!this.keepOpen) return fsyncPath(this.dir);
    this.fd ??= await fsOpen(this.dir, 'r');
    try {
      await fsFsync(this.fd);
    } catch {
      // The directory was replaced under us (a restore from backup): reopen once.
      await fsClose(this.fd).catch(() => undefined);
      this.fd = await fsOpen(this.dir, 'r');
      await fsFsync(this.fd);
    }
  }
}

// The callback API on plain descriptors: a third of FileHandle's cost per call on the hot path.
const fsOpen = promisify(fs.open);
const fsWrite = promisify(fs.write);
const fsWritev = promisify(fs.writev);
const fsRead = promisify(fs.read);
const fsDatasync = promisify(fs.fdatasync);
const fsFsync = promisify(fs.fsync);
const fsClose = promisify(fs.close);

/** The last bytes of a queue file: `\n#yubin-envelope:` and the envelope's length in 10 digits. */
const FOOTER = /^\n#yubin-envelope:(\d{10})\n$/;
const FOOTER_LENGTH = 28;

const PID = process.pid.toString(36).padStart(4, '0');

const isId = (name: string) => /^[A-Z0-9]+$/.test(name);

export async function fsyncPath(p: string): Promise<void> {
  // Plain descriptors, not a FileHandle: a directory sync per Maildir delivery is on the hot path.
  const fd = await fsOpen(p, 'r');
  try {
    await fsFsync(fd);
  } finally {
    await fsClose(fd);
  }
}

export class Spool {
  readonly tmpDir: string;
  readonly messDir: string;
  readonly stateDir: string;
  readonly messSync: DirSync;
  readonly stateSync: DirSync;
  /**
   * Called after each commit (the scheduler takes the message from here), with
   * the envelope and, for a message that arrived in memory, its stored form.
   */
  onCommit: ((id: string, committed: Committed) => void) | undefined;
  private seq = 0;

  constructor(readonly dir: string) {
    this.tmpDir = path.join(dir, 'tmp');
    this.messDir = path.join(dir, 'mess');
    this.stateDir = path.join(dir, 'state');
    this.messSync = new DirSync(this.messDir, true);
    this.stateSync = new DirSync(this.stateDir, true);
  }

  /** Creates the directories; with `clean`, removes what a crash left half-written (only the server does this). */
  async init(clean = true): Promise<void> {
    for (const d of [this.tmpDir, this.messDir, this.stateDir]) await mkdir(d, { recursive: true, mode: 0o700 });
    if (!clean) return;
    // Anything in tmp was never acknowledged: the process died before commit.
    for (const name of await readdir(this.tmpDir)) await unlink(path.join(this.tmpDir, name)).catch(() => undefined);
    // A state file without its message belongs to a message already finished.
    const names = new Set(await readdir(this.messDir));
    for (const name of await readdir(this.stateDir)) {
      if (!names.has(name.replace(/\.json$/, ''))) await unlink(path.join(this.stateDir, name)).catch(() => undefined);
    }
  }

  /**
   * Time-ordered and unique among the processes writing this spool (the
   * server and any sendmail): milliseconds, the process id, a sequence.
   */
  newId(): string {
    this.seq = (this.seq + 1) % 46_656;
    return `${Date.now().toString(36)}${PID}${this.seq.toString(36).padStart(3, '0')}`.toUpperCase();
  }

  /**
   * A new message file. Its `tmp/` file is created now, while the message is
   * still arriving, so that cost is off the path from the final dot to 250;
   * nothing is written until the message outgrows SMALL_MESSAGE: most mail
   * is a few kilobytes and is written whole, with its envelope, at commit.
   */
  begin(id: string): SpoolFile {
    return new SpoolFile(this, id, path.join(this.tmpDir, id));
  }

  /** Writes a whole message (bounces, sendmail) with the same durability as SMTP. */
  async inject(content: Buffer, envelope: Omit<Envelope, 'id' | 'size'>): Promise<string> {
    const id = this.newId();
    const file = this.begin(id);
    try {
      await file.write(content);
      await file.commit(envelope);
      return id;
    } catch (err) {
      await file.abort();
      throw err;
    }
  }

  /** Ids of committed messages. */
  async list(): Promise<string[]> {
    return (await readdir(this.messDir)).filter(isId).sort();
  }

  async has(id: string): Promise<boolean> {
    if (!isId(id)) return false;
    return stat(this.messagePath(id)).then(
      () => true,
      () => false,
    );
  }

  /** The envelope, from the trailer at the end of the message file. */
  async readEnvelope(id: string): Promise<Envelope> {
    const fh = await open(this.messagePath(id), 'r');
    try {
      const { size } = await fh.stat();
      const footer = Buffer.alloc(FOOTER_LENGTH);
      await fh.read(footer, 0, FOOTER_LENGTH, size - FOOTER_LENGTH);
      const m = FOOTER.exec(footer.toString('latin1'));
      if (!m) throw new Error(`queue file ${id} has no envelope trailer`);
      const length = Number(m[1]);
      const json = Buffer.alloc(length);
      await fh.read(json, 0, length, size - FOOTER_LENGTH - length);
      return JSON.parse(json.toString('utf8')) as Envelope;
    } finally {
      await fh.close();
    }
  }

  /** The delivery state, or undefined while nothing has been tried. */
  async readState(id: string): Promise<QueueState | undefined> {
    try {
      return JSON.parse(await readFile(path.join(this.stateDir, `${id}.json`), 'utf8')) as QueueState;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /**
   * Replaces the state atomically: tmp file, fsync, rename, shared directory
   * sync. Once this resolves, a restart will not redeliver a recipient marked
   * delivered here.
   */
  async writeState(id: string, state: QueueState): Promise<void> {
    const tmp = path.join(this.tmpDir, `${id}.state`);
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(state));
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path.join(this.stateDir, `${id}.json`));
    await this.stateSync.sync();
  }

  /** Removes a finished message, then its state (a state file alone is cleaned at start). */
  async remove(id: string): Promise<void> {
    await unlink(this.messagePath(id));
    await unlink(path.join(this.stateDir, `${id}.json`)).catch(() => undefined);
  }

  /** Reads the stored message (without the envelope trailer) into `into`, whose length is the envelope's size. */
  async readStored(id: string, into: Buffer): Promise<void> {
    const fd = await fsOpen(this.messagePath(id), 'r');
    try {
      for (let off = 0; off < into.length; ) {
        const { bytesRead } = await fsRead(fd, into, off, into.length - off, off);
        if (bytesRead === 0) throw new Error(`queue file ${id} is shorter than its envelope says`);
        off += bytesRead;
      }
    } finally {
      await fsClose(fd);
    }
  }

  messagePath(id: string): string {
    return path.join(this.messDir, id);
  }

  /** The message as stored: the prepended headers, then the file up to the envelope trailer. */
  async openMessage(id: string, envelope?: Envelope): Promise<Readable> {
    const env = envelope ?? (await this.readEnvelope(id));
    const body = env.size > 0 ? [createReadStream(this.messagePath(id), { start: 0, end: env.size - 1 })] : [];
    return concatStreams([Readable.from([Buffer.from(env.prependHeaders)]), ...body]);
  }
}

/**
 * Messages up to this size are held in memory until commit and reach the disk
 * in one write; larger ones are streamed to `tmp/` as they arrive, so memory
 * stays bounded whatever the size limit.
 */
const SMALL_MESSAGE = 128 * 1024;

export class SpoolFile {
  private size = 0;
  /** The file being created (begin); a failure is reported at the first write or at commit. */
  private readonly opening: Promise<number>;
  private fd: number | undefined;
  private closed = false;
  /** Bytes not yet written: all of a small message, nothing of a large one between writes. */
  private held: Buffer[] = [];
  private heldBytes = 0;

  constructor(
    private readonly spool: Spool,
    readonly id: string,
    readonly tmpPath: string,
  ) {
    this.opening = fsOpen(tmpPath, 'wx', 0o600);
    this.opening.catch(() => undefined);
  }

  async write(chunk: Buffer): Promise<void> {
    this.size += chunk.length;
    this.held.push(chunk);
    this.heldBytes += chunk.length;
    if (this.heldBytes > SMALL_MESSAGE || this.fd !== undefined) await this.flush();
  }

  /** What has been written so far (for data-hook plugins): from memory, or read back from disk. */
  read(): Readable {
    if (this.fd === undefined) return Readable.from(this.held.length ? [Buffer.concat(this.held, this.heldBytes)] : []);
    return createReadStream(this.tmpPath);
  }

  async commit(envelope: Omit<Envelope, 'id' | 'size'>): Promise<void> {
    const text = JSON.stringify({ id: this.id, size: this.size, ...envelope });
    const json = Buffer.from(text);
    const footer = Buffer.from(`\n#yubin-envelope:${String(json.length).padStart(10, '0')}\n`, 'latin1');
    // A small message is all still here: written in one go, and handed to the scheduler with the commit.
    const message = this.fd === undefined ? this.heldMessage() : undefined;
    this.held.push(json, footer);
    this.heldBytes += json.length + footer.length;
    await this.flush();
    await fsDatasync(this.fd!);
    // The name can move while the file is still open: both at once, one round trip less. Once
    // the data is synced a failing close cannot lose it, so only the rename decides the commit.
    await Promise.all([this.close().catch(() => undefined), rename(this.tmpPath, this.spool.messagePath(this.id))]);
    await this.spool.messSync.sync();
    // The envelope as a restart reads it back, not the object it was made from.
    this.spool.onCommit?.(this.id, { envelope: JSON.parse(text) as Envelope, message });
  }

  async abort(): Promise<void> {
    this.held = [];
    try {
      this.fd ??= await this.opening;
    } catch {
      return; // never created
    }
    await this.close();
    await unlink(this.tmpPath).catch(() => undefined);
  }

  /** The whole of a message held in memory, as one Buffer of its own (not a view into a larger read). */
  private heldMessage(): Buffer {
    const only = this.held.length === 1 ? this.held[0]! : undefined;
    const message = only && only.byteLength === only.buffer.byteLength ? only : Buffer.concat(this.held, this.heldBytes);
    this.held = [message];
    return message;
  }

  /** Writes what is held, opening the file first if this is the first write. */
  private async flush(): Promise<void> {
    if (this.closed) throw new Error(`queue file ${this.id} is already closed`);
    this.fd ??= await this.opening;
    const parts = this.held;
    const total = this.heldBytes;
    this.held = [];
    this.heldBytes = 0;
    await writeAll(this.fd, parts, total);
  }

  private async close(): Promise<void> {
    if (this.closed || this.fd === undefined) return;
    this.closed = true;
    await fsClose(this.fd);
  }
}

/** Writes every part at the file's position: one writev, finished byte-exact if it fell short (a full disk). */
export async function writeAll(fd: number, parts: readonly Buffer[], total: number): Promise<void> {
  const written = parts.length === 1 ? (await fsWrite(fd, parts[0]!, 0, total, null)).bytesWritten : (await fsWritev(fd, parts)).bytesWritten;
  if (written >= total) return;
  const rest = Buffer.concat(parts, total).subarray(written);
  for (let off = 0; off < rest.length; ) off += (await fsWrite(fd, rest, off, rest.length - off, null)).bytesWritten;
}

/** One stream reading several in turn. */
export function concatStreams(parts: Readable[]): Readable {
  return Readable.from(
    (async function* () {
      for (const part of parts) {
        for await (const chunk of part) yield chunk as Buffer;
      }
    })(),
  );
}
