/**
 * One connection that LISTENs for the mail store's change notifications, so
 * a `yubin user add` on one node reaches the caches of every other node in
 * milliseconds. A notification can be missed while the connection is down:
 * every drop and every (re)connection counts as a change, so caches re-read
 * rather than trust what they hold; it reconnects with a growing pause.
 */
import type { Client, ClientConfig } from 'pg';
import type { Logger } from 'pino';
import { pgModule } from './pg-module.js';

/** Pauses between reconnection attempts: short at first, never more than MAX_RETRY_MS. */
const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 5_000;

export interface ChangeListenerOptions {
  readonly client: ClientConfig;
  readonly channel: string;
  /** What the log calls the database (host, port and name; never the password). */
  readonly where: string;
  /** A notification came, or one may have been missed: the data may have changed. */
  readonly changed: () => void;
  readonly log: Logger | undefined;
}

export class ChangeListener {
  private client: Client | undefined;
  private timer: NodeJS.Timeout | undefined;
  private retryMs = FIRST_RETRY_MS;
  private stopped = false;
  private live = false;
  /** Logged once when the connection is lost, once when it is back: not at every attempt. */
  private down = false;

  constructor(private readonly options: ChangeListenerOptions) {
    void this.connect();
  }

  private async connect(): Promise<void> {
    this.timer = undefined;
    if (this.stopped) return;
    const client = new (pgModule().Client)(this.options.client);
    this.client = client;
    // An 'error' without a listener would end the process; either way the connection is gone.
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    client.on('notification', () => this.options.changed());
    try {
      await client.connect();
      await client.query(`LISTEN ${this.options.channel}`);
    } catch (err) {
      this.lost(client, err as Error);
      return;
    }
    if (this.client !== client) return; // stopped meanwhile
    this.retryMs = FIRST_RETRY_MS;
    this.live = true;
    if (this.down) this.options.log?.info({ store: this.options.where }, `mail store: listening for changes at PostgreSQL ${this.options.where} again`);
    this.down = false;
    // Changes made before LISTEN took effect were not announced to us.
    this.options.changed();
  }

  private lost(client: Client, err: Error): void {
    if (this.client !== client) return; // an old connection's late event
    this.client = undefined;
    this.live = false;
    client.removeAllListeners('notification');
    void client.end().catch(() => undefined);
    this.options.changed();
    if (this.stopped) return;
    if (!this.down) {
      this.options.log?.warn({ store: this.options.where, reason: err.message }, `mail store: lost the change notifications of PostgreSQL ${this.options.where} (${err.message}); reconnecting`);
    }
    this.down = true;
    this.timer = setTimeout(() => void this.connect(), this.retryMs);
    // A listener alone must not keep a process alive that has nothing else to do.
    this.timer.unref();
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
  }

  /** Whether notifications are arriving now. */
  get listening(): boolean {
    return this.live;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }
}
