/**
 * A control file that is read again when it changes, the way qmail re-reads
 * rcpthosts and tcpserver picks up a new tcp.smtp.cdb. A change that does not
 * parse is logged and the last good contents stay in force.
 */
import { readFile, stat } from 'node:fs/promises';
import type { Logger } from 'pino';

export interface WatchedFileOptions {
  /** Seconds between checks for a change (a stat call); default 1. */
  readonly checkInterval?: number;
  /** A missing file reads as empty instead of failing. */
  readonly optional?: boolean;
  readonly log?: Logger;
}

export class WatchedFile<T> {
  private value!: T;
  private signature = '';
  private checkedAt = 0;
  private checking: Promise<void> | undefined;

  private constructor(
    readonly path: string,
    private readonly parse: (text: string) => T,
    private readonly options: WatchedFileOptions,
  ) {}

  /** Reads the file now; throws if it is missing (unless optional) or does not parse. */
  static async open<T>(path: string, parse: (text: string) => T, options: WatchedFileOptions = {}): Promise<WatchedFile<T>> {
    const f = new WatchedFile(path, parse, options);
    await f.load(true);
    return f;
  }

  /** The current contents, re-read first if the file changed. */
  async get(): Promise<T> {
    const interval = (this.options.checkInterval ?? 1) * 1000;
    if (Date.now() - this.checkedAt >= interval) {
      this.checking ??= this.load(false).finally(() => (this.checking = undefined));
      await this.checking;
    }
    return this.value;
  }

  private async load(first: boolean): Promise<void> {
    this.checkedAt = Date.now();
    let signature: string;
    let text: string;
    try {
      const st = await stat(this.path);
      signature = `${st.ino}:${st.size}:${st.mtimeMs}`;
      if (!first && signature === this.signature) return;
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && this.options.optional) {
        signature = 'missing';
        text = '';
        if (!first && signature === this.signature) return;
      } else if (first) {
        throw new Error(`cannot read ${this.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      } else {
        this.options.log?.error({ file: this.path, err: (err as Error).message }, 'cannot read file, keeping its last contents');
        return;
      }
    }
    try {
      this.value = this.parse(text);
      if (!first) this.options.log?.info({ file: this.path }, 'file changed, reloaded');
      this.signature = signature;
    } catch (err) {
      if (first) throw new Error(`${this.path}: ${(err as Error).message}`);
      this.options.log?.error({ file: this.path, err: (err as Error).message }, 'file changed but does not parse, keeping its last contents');
      this.signature = signature; // do not retry until it changes again
    }
  }
}

/** qmail control file lines: one entry per line, `#` comments and blank lines skipped, whitespace trimmed. */
export function controlLines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter((l) => l !== '');
}
