/** The NFS-safe lock file (core/dotlock.ts) and the POP3 mailbox lock built on it. */
import { spawn } from 'node:child_process';
import { readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { takeDotlock } from '../core/dotlock.js';
import { LOCK_FILE, lockMailbox, takeMailboxEverywhere } from '../core/pop3/mailbox-lock.js';
import { tempDir } from './helpers.js';

t.test('one holder at a time; released, it is free again; no temporary files left', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'box.lock');
  const first = await takeDotlock(file);
  t.ok(first, 'taken');
  t.equal(await takeDotlock(file), undefined, 'held');
  t.match(await readFile(file, 'utf8'), new RegExp(`^${os.hostname()} ${process.pid} [0-9a-f]+\\n$`), 'host and pid inside');
  first!.release();
  first!.release();
  t.same(await readdir(dir), [], 'released: gone, with the link source');
  const second = await takeDotlock(file);
  t.ok(second, 'free again');
  second!.release();
});

t.test('a lock nobody touched for staleMs is taken over; a touched one is not', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'box.lock');
  // Another host's lock (a pid there means nothing here).
  await writeFile(file, 'elsewhere.example 12345 abc\n');
  t.equal(await takeDotlock(file, { staleMs: 60_000 }), undefined, 'fresh: held');
  const old = new Date(Date.now() - 120_000);
  await utimes(file, old, old);
  const taken = await takeDotlock(file, { staleMs: 60_000 });
  t.ok(taken, 'stale: taken over');
  t.match(await readFile(file, 'utf8'), new RegExp(`^${os.hostname()} `));
  // The holder keeps it fresh while it holds it.
  const touched = await takeDotlock(path.join(dir, 'other.lock'), { staleMs: 60_000, touchMs: 20 });
  await utimes(path.join(dir, 'other.lock'), old, old);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(await takeDotlock(path.join(dir, 'other.lock'), { staleMs: 60_000 }), undefined, 'touched again since');
  taken!.release();
  touched!.release();
});

t.test("a lock of this host's process that is gone is stale at once", async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'box.lock');
  const child = spawn(process.execPath, ['-e', '0']);
  const pid = child.pid!;
  await new Promise((r) => child.on('exit', r));
  await writeFile(file, `${os.hostname()} ${pid} abc\n`);
  const taken = await takeDotlock(file);
  t.ok(taken, 'the dead process lost it');
  taken!.release();
});

t.test('release leaves a lock alone that is no longer ours', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'box.lock');
  const mine = await takeDotlock(file);
  await writeFile(file, 'elsewhere.example 1 other\n');
  mine!.release();
  t.equal(await readFile(file, 'utf8'), 'elsewhere.example 1 other\n');
});

t.test('the POP3 mailbox lock: in this process and on disk', async (t) => {
  const dir = await tempDir(t);
  const release = await takeMailboxEverywhere(dir);
  t.ok(release);
  t.ok((await readdir(dir)).includes(LOCK_FILE), 'the lock file is in the Maildir');
  t.equal(lockMailbox(dir), undefined, 'this process: held');
  // What another process finds: the file alone.
  t.equal(await takeDotlock(path.join(dir, LOCK_FILE)), undefined, 'on disk: held');
  release!();
  t.same(await readdir(dir), [], 'released');
  // Held on disk by someone else (another host): refused, and the in-process lock is given back.
  await writeFile(path.join(dir, LOCK_FILE), 'elsewhere.example 1 other\n');
  t.equal(await takeMailboxEverywhere(dir), undefined);
  const again = lockMailbox(dir);
  t.ok(again, 'not left held in this process');
  again!();
  // No Maildir yet: the in-process lock alone.
  const none = await takeMailboxEverywhere(path.join(dir, 'missing'));
  t.ok(none);
  none!();
});
