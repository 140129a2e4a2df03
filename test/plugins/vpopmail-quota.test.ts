/** vpopmail Maildir++ quotas: quota strings, maildirsize upkeep, over-quota decisions. */
import { mkdir, readdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import {
  checkQuota, countMaildir, formatQuota, parseQuota, readUsage, recordDelivery, RECALC_SIZE, type Quota,
} from '../../plugins/vpopmail/quota.js';
import { tempDir } from '../helpers.js';

/** A Maildir with cur/ new/ tmp/ and the given files (name → size in bytes). */
async function maildir(t: Test, files: Record<string, number> = {}): Promise<string> {
  const dir = path.join(await tempDir(t, 'yubin-quota-'), 'Maildir');
  for (const sub of ['cur', 'new', 'tmp']) await mkdir(path.join(dir, sub), { recursive: true });
  for (const [name, size] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await writeFile(path.join(dir, name), 'x'.repeat(size));
  }
  return dir;
}

const sizeFile = (dir: string) => path.join(dir, 'maildirsize');
const readSizeFile = (dir: string) => readFile(sizeFile(dir), 'utf8');

/** Backdate a file's mtime by `ms`. */
async function age(file: string, ms: number): Promise<void> {
  const when = new Date(Date.now() - ms);
  await utimes(file, when, when);
}

t.test('parseQuota / formatQuota', async (t) => {
  const table: [string, Quota | undefined, string | undefined][] = [
    ['NOQUOTA', {}, 'NOQUOTA'],
    ['noquota', {}, 'NOQUOTA'],
    ['', {}, 'NOQUOTA'],
    ['  ', {}, 'NOQUOTA'],
    ['10000000S', { bytes: 10000000 }, '10000000S'],
    ['1000C', { count: 1000 }, '1000C'],
    ['10000000S,1000C', { bytes: 10000000, count: 1000 }, '10000000S,1000C'],
    ['1000C,10000000S', { bytes: 10000000, count: 1000 }, '10000000S,1000C'],
    [' 5000S , 10C ', { bytes: 5000, count: 10 }, '5000S,10C'],
    ['0S', {}, 'NOQUOTA'],
    ['0S,5C', { count: 5 }, '5C'],
    ['1MB', { bytes: 1048576 }, '1048576S'],
    ['5M', { bytes: 5242880 }, '5242880S'],
    ['5m', { bytes: 5242880 }, '5242880S'],
    ['1000KB', { bytes: 1024000 }, '1024000S'],
    ['64K', { bytes: 65536 }, '65536S'],
    ['2GB', { bytes: 2147483648 }, '2147483648S'],
    ['1.5M', { bytes: 1572864 }, '1572864S'],
    ['500000', { bytes: 500000 }, '500000S'],
    ['10X', undefined, undefined],
    ['-5S', undefined, undefined],
    ['S', undefined, undefined],
    ['C', undefined, undefined],
    ['1.5.2M', undefined, undefined],
    ['10S,', undefined, undefined],
    ['10S,20S', undefined, undefined],
    ['10S 5C', undefined, undefined],
    ['1.5S', undefined, undefined],
    ['M', undefined, undefined],
    ['-1', undefined, undefined],
    ['99999999999999999999S', undefined, undefined],
    ['NOQUOTA,5C', undefined, undefined],
  ];
  for (const [text, quota, formatted] of table) {
    const parsed = parseQuota(text);
    t.same(parsed, quota, `parse ${JSON.stringify(text)}`);
    if (parsed && formatted !== undefined) t.equal(formatQuota(parsed), formatted, `format ${JSON.stringify(text)}`);
  }
  t.equal(formatQuota({ count: 7 }), '7C');
});

t.test('recalculation counts cur/ and new/ of the inbox and folders, except .Trash', async (t) => {
  const dir = await maildir(t, {
    'new/1000.M1P1Q1.host,S=1000': 10, // the size in the name wins over the real size
    'cur/1001.M1P1Q2.host,S=2000:2,S': 10,
    'cur/1002.M1P1Q3.host:2,S': 300, // no ,S= → stat size
    'new/.hidden': 999, // dot files are not messages
    'tmp/1003.M1P1Q4.host': 5000, // in-progress deliveries do not count
    '.Spam/new/1004.M1P1Q5.host,S=400': 1,
    '.Spam/cur/1005.M1P1Q6.host,S=50:2,': 1,
    '.Lists.Node/cur/1006.M1P1Q7.host,S=7': 1,
    '.Trash/cur/1007.M1P1Q8.host,S=100000:2,ST': 1,
    '.Trash/new/1008.M1P1Q9.host,S=100000': 1,
  });
  await mkdir(path.join(dir, 'cur', 'subdir-not-a-message'));
  await writeFile(path.join(dir, 'courierimapkeywords'), 'not a folder');

  const expected = { bytes: 1000 + 2000 + 300 + 400 + 50 + 7, count: 6 };
  t.same(await countMaildir(dir), expected);
  const quota = { bytes: 10000000, count: 1000 };
  t.same(await readUsage(dir, quota), expected, 'no maildirsize yet: recalculated');
  t.equal(await readSizeFile(dir), `10000000S,1000C\n${expected.bytes} ${expected.count}\n`);
  t.equal((await stat(sizeFile(dir))).mode & 0o777, 0o600);
  t.same((await readdir(path.join(dir, 'tmp'))).sort(), ['1003.M1P1Q4.host'], 'no temp files left behind');
});

t.test('a fresh maildirsize is trusted: deltas are summed, negative lines included', async (t) => {
  const dir = await maildir(t, { 'new/1.M1P1Q1.host,S=5': 5 });
  await writeFile(sizeFile(dir), '10000S,100C\n3000 3\n1500 1\n-500 -1\n  200   1  \n');
  t.same(await readUsage(dir, { bytes: 10000, count: 100 }), { bytes: 4200, count: 4 });
  t.equal(await readSizeFile(dir), '10000S,100C\n3000 3\n1500 1\n-500 -1\n  200   1  \n', 'left alone');
  // The header is compared as a quota, not as text.
  await writeFile(sizeFile(dir), '100C,10000S\n3000 3\n');
  t.same(await readUsage(dir, { bytes: 10000, count: 100 }), { bytes: 3000, count: 3 });
});

t.test('recalculation triggers: stale, large, other quota, malformed, negative', async (t) => {
  const files = { 'new/1.M1P1Q1.host,S=1000': 1, 'cur/2.M1P1Q2.host,S=500:2,S': 1 };
  const actual = { bytes: 1500, count: 2 };
  const quota = { bytes: 100000 };
  const dir = await maildir(t, files);
  const stale = '100000S\n99 9\n';

  await writeFile(sizeFile(dir), stale);
  await age(sizeFile(dir), 14 * 60 * 1000);
  t.same(await readUsage(dir, quota), { bytes: 99, count: 9 }, '14 minutes old: still trusted');

  await age(sizeFile(dir), 16 * 60 * 1000);
  t.same(await readUsage(dir, quota), actual, 'older than 15 minutes: recounted');
  t.equal(await readSizeFile(dir), '100000S\n1500 2\n');
  t.ok(Date.now() - (await stat(sizeFile(dir))).mtimeMs < 60_000, 'rewritten');

  await writeFile(sizeFile(dir), stale);
  t.same(await readUsage(dir, quota, Date.now() + 16 * 60 * 1000), actual, 'the clock can be given');

  await writeFile(sizeFile(dir), stale + '1 0\n'.repeat(Math.ceil(RECALC_SIZE / 4)));
  t.same(await readUsage(dir, quota), actual, `${RECALC_SIZE} bytes or more: recounted`);

  await writeFile(sizeFile(dir), '5000S\n99 9\n');
  t.same(await readUsage(dir, quota), actual, 'written for another quota: recounted');
  t.equal(await readSizeFile(dir), '100000S\n1500 2\n', 'with the new quota line');

  for (const bad of ['100000S\n99 x\n', 'garbage\n99 9\n', '100000S\n-5000 -1\n', '']) {
    await writeFile(sizeFile(dir), bad);
    t.same(await readUsage(dir, quota), actual, `recounted after ${JSON.stringify(bad)}`);
  }
});

t.test('over quota: 1000S and a 2000-byte message; the count limit', async (t) => {
  const dir = await maildir(t);
  const q = { bytes: 1000 };
  const r = await checkQuota(dir, q, 2000);
  t.equal(r.over, true);
  t.same(r.usage, { bytes: 0, count: 0 });
  const before = await readSizeFile(dir);
  t.equal((await checkQuota(dir, q, 2000)).over, true);
  t.equal(await readSizeFile(dir), before, 'maildirsize unchanged by a refused message');
  t.equal((await checkQuota(dir, q, 1000)).over, false, 'exactly at the limit is allowed');

  const counted = await maildir(t, { 'new/1.M1P1Q1.host,S=10': 1, 'new/2.M1P1Q2.host,S=10': 1 });
  t.equal((await checkQuota(counted, { count: 3 }, 1)).over, false, '2 + 1 <= 3');
  const full = await checkQuota(counted, { count: 2 }, 1);
  t.equal(full.over, true, '2 + 1 > 2');
  t.equal(full.percent, 100);
  const both = await checkQuota(counted, { bytes: 1000000, count: 2 }, 1);
  t.equal(both.over, true, 'either limit is enough');
  const half = await checkQuota(counted, { bytes: 40, count: 100 }, 5);
  t.same([half.over, half.percent], [false, 50], 'percent of the tighter limit');
});

t.test('an over-quota answer from delivery lines is rechecked after one recount', async (t) => {
  const dir = await maildir(t, { 'new/1.M1P1Q1.host,S=100': 1 });
  // Mail was deleted behind maildirsize's back (e.g. by POP3): the file still says 900.
  await writeFile(sizeFile(dir), '1000S\n0 0\n900 9\n');
  const r = await checkQuota(dir, { bytes: 1000 }, 200);
  t.equal(r.over, false);
  t.same(r.usage, { bytes: 100, count: 1 });
  t.equal(await readSizeFile(dir), '1000S\n100 1\n');

  // Really over: still over after the recount.
  await writeFile(path.join(dir, 'new', '2.M1P1Q2.host,S=850'), '');
  await writeFile(sizeFile(dir), '1000S\n100 1\n850 1\n');
  t.equal((await checkQuota(dir, { bytes: 1000 }, 200)).over, true);
});

t.test('unlimited quota never says over and does not touch the disk', async (t) => {
  const dir = await maildir(t, { 'new/1.M1P1Q1.host,S=99999999': 1 });
  const r = await checkQuota(dir, {}, 10 ** 12);
  t.same(r, { over: false, usage: { bytes: 0, count: 0 }, percent: 0 });
  await recordDelivery(dir, {}, 100);
  t.same(await readUsage(dir, {}), { bytes: 99999999, count: 1 }, 'usage is still countable');
  t.same((await readdir(dir)).sort(), ['cur', 'new', 'tmp'], 'no maildirsize created');
  t.same(await checkQuota(path.join(dir, 'missing'), {}, 1), r, 'not even a Maildir is needed');
});

t.test('recordDelivery appends one line; a missing file is created by recounting', async (t) => {
  const dir = await maildir(t, { 'new/1.M1P1Q1.host,S=300': 1 });
  const q = { bytes: 100000, count: 100 };
  // The message is already in new/ when the delivery is recorded, so the recount includes it.
  await recordDelivery(dir, q, 300);
  t.equal(await readSizeFile(dir), '100000S,100C\n300 1\n');
  t.equal((await stat(sizeFile(dir))).mode & 0o777, 0o600);
  await recordDelivery(dir, q, 1234);
  t.equal(await readSizeFile(dir), '100000S,100C\n300 1\n1234 1\n');
  t.same(await readUsage(dir, q), { bytes: 1534, count: 2 });

  // A Maildir that does not exist yet gets no file (and no error).
  const missing = path.join(dir, 'nope');
  await recordDelivery(missing, q, 10);
  t.same(await readUsage(missing, q), { bytes: 0, count: 0 });
});

t.test('50 concurrent deliveries all land', async (t) => {
  const dir = await maildir(t);
  const q = { bytes: 10 ** 9 };
  t.same(await readUsage(dir, q), { bytes: 0, count: 0 });
  await Promise.all(Array.from({ length: 50 }, (_, i) => recordDelivery(dir, q, 1000 + i)));
  const lines = (await readSizeFile(dir)).split('\n');
  t.equal(lines.length, 1 + 1 + 50 + 1, 'header, total, 50 deltas, final newline');
  t.ok(lines.slice(2, -1).every((l) => /^10[0-4]\d 1$/.test(l)), 'no interleaved lines');
  const expectedBytes = Array.from({ length: 50 }, (_, i) => 1000 + i).reduce((a, b) => a + b, 0);
  t.same(await readUsage(dir, q), { bytes: expectedBytes, count: 50 });
});
