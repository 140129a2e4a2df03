/**
 * The spool: where an accepted message becomes durable before the client
 * hears 250, with qmail's promise that nothing acknowledged is ever lost.
 *
 * A message is streamed into `tmp/ID` while it arrives. Commit fsyncs it,
 * writes the envelope to `tmp/ID.json` and fsyncs that, renames the message
 * to `mess/ID.eml` and then the envelope to `mess/ID.json`, and fsyncs the
 * `mess` directory. The envelope is the commit marker: a message file without
 * one is a half-finished transaction and is removed at start.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, type ReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';

export interface EnvelopeAddress {
  readonly address: string;
  readonly params: Readonly<Record<string, string | true>>;
}

export interface Envelope {
  readonly id: string;
  /** '' for the null sender. */
  readonly sender: string;
  readonly senderParams: Readonly<Record<string, string | true>>;
  readonly recipients: readonly EnvelopeAddress[];
  /** Milliseconds since the epoch. */
  readonly received: number;
  readonly listener: string;
  readonly remoteIp: string;
  readonly heloName: string | undefined;
  readonly authUser: string | undefined;
  /** Header lines (CRLF-terminated) that go on top of the stored message. */
  readonly prependHeaders: string;
  /** Size of the stored message file. */
  readonly size: number;
}

export class Spool {
  readonly tmpDir: string;
  readonly messDir: string;
  private seq = 0;

  constructor(readonly dir: string) {
    this.tmpDir = path.join(dir, 'tmp');
    this.messDir = path.join(dir, 'mess');
  }

  async init(): Promise<void> {
    await mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
    await mkdir(this.messDir, { recursive: true, mode: 0o700 });
    // Anything in tmp was never acknowledged: the process died before commit.
    for (const name of await readdir(this.tmpDir)) await unlink(path.join(this.tmpDir, name)).catch(() => undefined);
    // A message whose envelope never arrived was not acknowledged either.
    const names = new Set(await readdir(this.messDir));
    for (const name of names) {
      if (name.endsWith('.eml') && !names.has(name.replace(/\.eml$/, '.json'))) {
        await unlink(path.join(this.messDir, name)).catch(() => undefined);
      }
    }
  }

  /** Time-ordered, unique within the host: milliseconds, a sequence and randomness. */
  newId(): string {
    this.seq = (this.seq + 1) % 1296;
    return `${Date.now().toString(36)}${this.seq.toString(36).padStart(2, '0')}${randomBytes(4).toString('hex')}`.toUpperCase();
  }

  async begin(id: string): Promise<SpoolFile> {
    const tmp = path.join(this.tmpDir, id);
    const fh = await open(tmp, 'wx', 0o600);
    return new SpoolFile(this, id, tmp, fh);
  }

  /** Ids of committed messages. */
  async list(): Promise<string[]> {
    return (await readdir(this.messDir)).filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)).sort();
  }

  async readEnvelope(id: string): Promise<Envelope> {
    const fh = await open(path.join(this.messDir, `${id}.json`), 'r');
    try {
      return JSON.parse(await fh.readFile('utf8')) as Envelope;
    } finally {
      await fh.close();
    }
  }

  /** The message as stored: the prepended headers, then the file. */
  async openMessage(id: string): Promise<Readable> {
    const env = await this.readEnvelope(id);
    return concatStreams([Readable.from([Buffer.from(env.prependHeaders)]), createReadStream(path.join(this.messDir, `${id}.eml`))]);
  }

  async fsyncDir(dir: string): Promise<void> {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
}

export class SpoolFile {
  private size = 0;
  private closed = false;

  constructor(
    private readonly spool: Spool,
    readonly id: string,
    readonly tmpPath: string,
    private readonly fh: FileHandle,
  ) {}

  async write(chunk: Buffer): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, off, chunk.length - off);
      off += bytesWritten;
    }
    this.size += chunk.length;
  }

  /** What has been written so far, read back from disk (for data-hook plugins). */
  read(): ReadStream {
    return createReadStream(this.tmpPath);
  }

  async commit(envelope: Omit<Envelope, 'id' | 'size'>): Promise<void> {
    const { tmpDir, messDir } = this.spool;
    await this.fh.sync();
    await this.close();
    const envTmp = path.join(tmpDir, `${this.id}.json`);
    const efh = await open(envTmp, 'wx', 0o600);
    try {
      await efh.writeFile(JSON.stringify({ id: this.id, size: this.size, ...envelope }));
      await efh.sync();
    } finally {
      await efh.close();
    }
    await rename(this.tmpPath, path.join(messDir, `${this.id}.eml`));
    await rename(envTmp, path.join(messDir, `${this.id}.json`));
    await this.spool.fsyncDir(messDir);
  }

  async abort(): Promise<void> {
    await this.close();
    await unlink(this.tmpPath).catch(() => undefined);
  }

  private async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
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
