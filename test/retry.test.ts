/** The retry schedule: qmail-send's formula, or the configured list. */
import t from 'tap';
import { nextAttempt } from '../core/queue/retry.js';

t.test("qmail's schedule from the birth time: remote 0, 400 s, 1600 s, 1 h ...; local 100 s, 400 s, 900 s ...", async (t) => {
  const birth = 1_000_000_000_000;
  const walk = (channel: 'local' | 'remote', n: number) => {
    const times: number[] = [];
    let now = birth;
    for (let i = 1; i <= n; i++) {
      now = nextAttempt(birth, now, channel, i);
      times.push((now - birth) / 1000);
    }
    return times;
  };
  t.same(walk('remote', 6), [400, 1600, 3600, 6400, 10000, 14400], 'tries on time land on 6m40s, 26m40s, 1h, 1h46m40s, 2h46m40s, 4h (the reference list)');
  t.same(walk('local', 4), [100, 400, 900, 1600]);
  // qmail's slots when each try happens near the previous due time: (sqrt(age) + c)^2.
  t.equal((nextAttempt(birth, birth + 400_000, 'remote', 2) - birth) / 1000, (20 + 20) ** 2, 'after the 400 s try: 1600 s');
  t.equal((nextAttempt(birth, birth + 1_600_000, 'remote', 3) - birth) / 1000, (40 + 20) ** 2, 'after the 1600 s try: 1 h');
  t.equal((nextAttempt(birth, birth, 'local', 1) - birth) / 1000, 100);
  t.equal((nextAttempt(birth, birth + 100_000, 'local', 2) - birth) / 1000, 400);
  t.equal((nextAttempt(birth, birth + 86_400_000, 'remote', 9) - birth) / 1000, (293 + 20) ** 2, 'a day in: about 27 h');
  t.ok(nextAttempt(birth, birth + 5000, 'remote', 1) > birth + 5000, 'always in the future');
});

t.test('a configured list: delay after each attempt, the last one repeating', async (t) => {
  const list = [60_000, 300_000, 3_600_000];
  t.equal(nextAttempt(0, 1000, 'remote', 1, list), 61_000);
  t.equal(nextAttempt(0, 1000, 'remote', 2, list), 301_000);
  t.equal(nextAttempt(0, 1000, 'local', 3, list), 3_601_000);
  t.equal(nextAttempt(0, 1000, 'local', 9, list), 3_601_000);
});
