/**
 * Free space on the spool's filesystem, watched so a full disk is refused
 * politely before a message is half written (Postfix's queue_minfree):
 * below the threshold, MAIL gets 452 4.3.1 and the log carries an alarm
 * line (at error level, `alarm: true`) every minute until space is back.
 */
import { statfs } from 'node:fs/promises';
import type { Logger } from 'pino';

/** statfs at most this often: MAIL stays one cached comparison. */
const CHECK_MS = 1_000;
const ALARM_REPEAT_MS = 60_000;

export class SpoolSpace {
  private checked = -Infinity;
  private free = Infinity;
  private checking: Promise<void> | undefined;
  private alarmedAt: number | undefined;

  constructor(
    private readonly dir: string,
    private minFree: number,
    private readonly log: Logger,
  ) {}

  /** A reload may change the threshold. */
  configure(minFree: number): void {
    this.minFree = minFree;
    this.checked = -Infinity;
  }

  /**
   * True while the spool has at least the configured free space, as last read. A
   * reading older than a second starts a new one; the answer does not wait for it
   * (MAIL stays one comparison).
   */
  ok(): boolean {
    if (this.minFree <= 0) return true;
    if (performance.now() - this.checked >= CHECK_MS) void this.refresh();
    return this.free >= this.minFree;
  }

  /** Reads the free space now (at start, so the first MAIL already knows). */
  refresh(): Promise<void> {
    return (this.checking ??= this.check().finally(() => (this.checking = undefined)));
  }

  private async check(): Promise<void> {
    try {
      const s = await statfs(this.dir);
      this.free = s.bavail * s.bsize;
    } catch (err) {
      // Cannot tell: take mail; writing it will say whether there is room.
      this.log.warn({ event: 'disk-space', dir: this.dir, err: (err as Error).message }, 'cannot read the spool\'s free space');
      this.free = Infinity;
    }
    this.checked = performance.now();
    const now = Date.now();
    if (this.free < this.minFree) {
      if (this.alarmedAt === undefined || now - this.alarmedAt >= ALARM_REPEAT_MS) {
        this.alarmedAt = now;
        this.log.error(
          { event: 'disk-space', alarm: true, dir: this.dir, free: this.free, minFree: this.minFree },
          `ALARM: ${Math.floor(this.free / 1048576)} MB free on the spool's filesystem, below the ${Math.floor(this.minFree / 1048576)} MB minimum: refusing mail with 452 4.3.1`,
        );
      }
    } else if (this.alarmedAt !== undefined) {
      this.alarmedAt = undefined;
      this.log.warn({ event: 'disk-space', alarm: false, dir: this.dir, free: this.free, minFree: this.minFree }, 'spool free space is back above the minimum: taking mail again');
    }
  }
}
