/**
 * One read of a queued message for all the recipients delivered from it in
 * one job: the prepended headers and the stored file, read into one Buffer
 * the first time a plugin asks, then handed out as that Buffer or as streams
 * over it. Ten local recipients cost one open and one read of the spool file,
 * not ten streams.
 *
 * A message this process has just committed may come with its stored form
 * (RecentCommits): then nothing is read from the spool at all.
 *
 * A message larger than IN_MEMORY_MAX is streamed from disk to whoever asks
 * for a stream (as before); only a plugin that asks for the whole Buffer
 * (read()) makes it load.
 */
import { Readable } from 'node:stream';
import type { Envelope, Spool } from './spool.js';

/** Above this, stream() reads from disk rather than hold the message in memory for the job. */
export const IN_MEMORY_MAX = 16 * 1024 * 1024;

export class SharedMessage {
  private loaded: Promise<Buffer> | undefined;

  constructor(
    private readonly spool: Spool,
    private readonly id: string,
    private readonly envelope: Envelope,
    /** The spool file's message part, when still in memory from the commit. */
    private readonly stored?: Buffer,
  ) {}

  /** Size as delivered: prepended headers and the stored message (CRLF). */
  get size(): number {
    return Buffer.byteLength(this.envelope.prependHeaders) + this.envelope.size;
  }

  /** The whole message; read once, whoever asks. */
  read(): Promise<Buffer> {
    if (!this.loaded) {
      const loading = this.load();
      // A failed read is not kept: the next recipient tries again.
      loading.catch(() => {
        if (this.loaded === loading) this.loaded = undefined;
      });
      this.loaded = loading;
    }
    return this.loaded;
  }

  /** A stream of the message; opens nothing until it is read. */
  stream(): Readable {
    const fromMemory = this.loaded !== undefined || this.size <= IN_MEMORY_MAX;
    const source = fromMemory ? async () => Readable.from([await this.read()]) : () => this.spool.openMessage(this.id, this.envelope);
    return Readable.from(
      (async function* () {
        for await (const chunk of await source()) yield chunk as Buffer;
      })(),
    );
  }

  private async load(): Promise<Buffer> {
    const env = this.envelope;
    const head = Buffer.byteLength(env.prependHeaders);
    const buf = Buffer.allocUnsafe(head + env.size);
    buf.write(env.prependHeaders, 0, 'utf8');
    if (env.size === 0) return buf;
    if (this.stored?.length === env.size) this.stored.copy(buf, head);
    else await this.spool.readStored(this.id, buf.subarray(head));
    return buf;
  }
}
