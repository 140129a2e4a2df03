/**
 * When each waiting message is next due, and the one timer that wakes the
 * scheduler for the earliest: the timing half of qmail-send, apart from the
 * concurrency and delivery halves (scheduler.ts, slots.ts).
 *
 * The index (id → time) is the truth; the heap orders it. Rescheduling a
 * message pushes a new heap entry and leaves the old one, which is dropped
 * when it reaches the top and no longer matches the index: cheaper than
 * finding and moving it.
 */
import type { Clock } from '../services/clock.js';
import { MinHeap } from './heap.js';

/** Longest the timer sleeps: a clock moved by a test, or the system, is noticed within this. */
const WAKE_MS = 1000;

export class Timetable {
  private readonly index = new Map<string, number>();
  private readonly heap = new MinHeap();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly clock: Clock) {}

  /** Messages waiting. */
  get size(): number {
    return this.index.size;
  }

  has(id: string): boolean {
    return this.index.has(id);
  }

  ids(): IterableIterator<string> {
    return this.index.keys();
  }

  /** Due times of every waiting message (for the gauges). */
  times(): IterableIterator<number> {
    return this.index.values();
  }

  /** Due at `at` (milliseconds since the epoch; 0 = now), replacing any earlier time. */
  set(id: string, at: number): void {
    this.index.set(id, at);
    this.heap.push(at, id);
  }

  delete(id: string): void {
    this.index.delete(id);
  }

  /** The earliest waiting message, whether due or not. */
  next(): { at: number; id: string } | undefined {
    for (;;) {
      const top = this.heap.peek();
      if (!top) return undefined;
      if (this.index.get(top.id) === top.at) return top;
      this.heap.pop();
    }
  }

  /** Takes the earliest message off the timetable if it is due now. */
  takeDue(): string | undefined {
    const top = this.next();
    if (!top || top.at > this.clock.now()) return undefined;
    this.heap.pop();
    this.index.delete(top.id);
    return top.id;
  }

  /** Nothing is due now. */
  quiet(): boolean {
    const top = this.next();
    return top === undefined || top.at > this.clock.now();
  }

  /** Calls `wake` when the earliest message falls due (at most WAKE_MS from now); replaces the timer set before. */
  arm(wake: () => void): void {
    this.disarm();
    const top = this.next();
    if (!top) return;
    this.timer = setTimeout(wake, Math.min(Math.max(top.at - this.clock.now(), 0), WAKE_MS));
    this.timer.unref();
  }

  disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
