/**
 * When to try again. Without a configured list, qmail-send's schedule:
 * next = birth + (floor(sqrt(age)) + c)^2 seconds, c = 10 local, 20 remote —
 * quick retries at first, then ever rarer, and never reset by a restart
 * because it depends only on the birth time and the clock.
 */
export type Channel = 'local' | 'remote';

const QMAIL_C: Record<Channel, number> = { local: 10, remote: 20 };

export function nextAttempt(birth: number, now: number, channel: Channel, attempts: number, list?: readonly number[]): number {
  if (list && list.length) return now + list[Math.min(attempts, list.length) - 1]!;
  const age = Math.max(0, (now - birth) / 1000);
  const k = Math.floor(Math.sqrt(age)) + QMAIL_C[channel];
  return birth + k * k * 1000;
}

export const TOO_LONG = "I'm not going to try again; this message has been in the queue too long.";
