/**
 * The crash rig (bench/crash) at small scale: yubin killed with SIGKILL five
 * times under load from four clients, restarted each time, then every
 * message it answered 250 must be in each recipient's Maildir; and ten clean
 * restarts (SIGTERM) under load, after which nothing may be delivered twice.
 */
import type { ChildProcess } from 'node:child_process';
import t, { type Test } from 'tap';
import { runCrash, type CrashOptions, type CrashResult } from '../bench/crash/crash.js';
import { tempDir } from './helpers.js';

/** Runs the rig in a test's own directory; every child it starts is stopped with the test. */
async function crash(t: Test, options: CrashOptions): Promise<CrashResult & { children: ChildProcess[] }> {
  const dir = await tempDir(t, 'yubin-crash-t-');
  const children: ChildProcess[] = [];
  t.teardown(() => {
    // runCrash stops everything it started; this is for a run cut short by a failure or timeout.
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
  const r = await runCrash({ ...options, dir, onChild: (c) => children.push(c), log: (line) => t.comment(line) });
  return { ...r, children };
}

t.test('nothing acknowledged is lost across kill -9 and restart', async (t) => {
  const r = await crash(t, { kills: 5, clients: 4, seed: 20261125, tailMs: 500, settleTimeoutMs: 60_000 });
  t.comment(`acknowledged ${r.messages.acknowledged}, recipients ${r.recipientsExpected}, delivered ${r.recipientsDelivered}, duplicates ${r.duplicates}, lost ${r.lost}, ${r.elapsedMs} ms`);

  t.equal(r.kills, 5, 'five kills');
  t.ok(r.messages.acknowledged > 0, 'messages were acknowledged');
  t.equal(r.lost, 0, 'no acknowledged recipient lost', { lost: r.lostRecipients });
  t.ok(r.recipientsDelivered >= r.recipientsExpected, 'every acknowledged recipient delivered');
  t.ok(r.deliveredFiles >= r.recipientsExpected, 'delivered files >= acknowledged recipients');
  t.ok(r.killsInFlight >= 1, 'at least one kill hit messages in flight', { killLog: r.killLog });
  t.equal(r.corrupt, 0, 'no delivered file differs from what was sent');
  t.equal(r.misdelivered, 0, 'no message in the wrong Maildir');
  t.equal(r.abortedDelivered, 0, 'nothing delivered whose final dot was never sent');
  t.equal(r.leftInQueue, 0, 'the queue emptied');
  t.equal(r.redeliveries.sameProcess + r.redeliveries.afterCleanStop, 0, 'every redelivery follows a kill', { examples: r.redeliveries.examples });
  t.ok(r.ok, 'the run passed', { problems: r.problems });
  t.ok(r.children.length >= 6, 'a server per start (and the queue commands) were started');
  t.ok(
    r.children.every((c) => c.exitCode !== null || c.signalCode !== null),
    'every child process has exited',
  );
});

// Issue 15, item 3: a message's local recipients are delivered as one job, their outcomes written once per batch.
t.test('up to 10 recipients per message (one delivery job each): nothing lost across kill -9', async (t) => {
  const r = await crash(t, { kills: 4, clients: 4, seed: 20261204, maxRecipients: 10, tailMs: 500, settleTimeoutMs: 60_000 });
  t.comment(`acknowledged ${r.messages.acknowledged}, recipients ${r.recipientsExpected}, delivered ${r.recipientsDelivered}, duplicates ${r.duplicates}, lost ${r.lost}, ${r.elapsedMs} ms`);
  t.ok(r.recipientsExpected > r.messages.acknowledged * 2, 'messages had several recipients');
  t.equal(r.lost, 0, 'no acknowledged recipient lost', { lost: r.lostRecipients });
  t.equal(r.corrupt + r.misdelivered + r.abortedDelivered + r.leftInQueue, 0, 'nothing corrupt, misdelivered, aborted-but-delivered or left queued');
  t.equal(r.redeliveries.sameProcess + r.redeliveries.afterCleanStop, 0, 'every redelivery follows a kill', { examples: r.redeliveries.examples });
  t.ok(r.ok, 'the run passed', { problems: r.problems });
});

// Issue 18, defect 9: SIGTERM used to wait for deliveries, not for the step that records them.
t.test('10 SIGTERM restarts under load: nothing lost, nothing delivered twice', async (t) => {
  const r = await crash(t, { signal: 'SIGTERM', kills: 10, clients: 4, seed: 20261203, minDelayMs: 100, maxDelayMs: 400, tailMs: 500, settleTimeoutMs: 60_000 });
  t.comment(`acknowledged ${r.messages.acknowledged}, recipients ${r.recipientsExpected}, delivered ${r.recipientsDelivered}, duplicates ${r.duplicates}, ${r.elapsedMs} ms`);
  t.equal(r.kills, 10, 'ten clean restarts');
  t.ok(r.messages.acknowledged > 0, 'messages were acknowledged');
  t.equal(r.lost, 0, 'nothing acknowledged lost');
  t.equal(r.duplicates, 0, 'no copy delivered twice');
  t.equal(r.redeliveries.redeliveredPairs, 0, 'and no redelivery in the logs', { examples: r.redeliveries.examples });
  t.equal(r.corrupt + r.misdelivered + r.abortedDelivered + r.leftInQueue, 0, 'nothing corrupt, misdelivered, aborted-but-delivered or left queued');
  t.ok(r.ok, 'the run passed', { problems: r.problems });
  t.ok(r.children.every((c) => c.exitCode !== null || c.signalCode !== null), 'every child process has exited');
});

// Issue 15 item 2: with workers the kill hits the primary (the queue's owner); its workers exit with it.
t.test('workers: 2 — nothing acknowledged is lost across kill -9 of the primary and restart', async (t) => {
  const r = await crash(t, { workers: 2, kills: 3, clients: 4, seed: 20261204, minDelayMs: 300, maxDelayMs: 800, earlyKillRatio: 0, tailMs: 500, settleTimeoutMs: 60_000 });
  t.comment(`acknowledged ${r.messages.acknowledged}, recipients ${r.recipientsExpected}, delivered ${r.recipientsDelivered}, duplicates ${r.duplicates}, lost ${r.lost}, ${r.elapsedMs} ms`);
  t.equal(r.kills, 3);
  t.ok(r.messages.acknowledged > 0, 'messages were acknowledged');
  t.equal(r.lost, 0, 'no acknowledged recipient lost', { lost: r.lostRecipients });
  t.equal(r.corrupt + r.misdelivered + r.abortedDelivered + r.leftInQueue, 0, 'nothing corrupt, misdelivered, aborted-but-delivered or left queued');
  t.ok(r.ok, 'the run passed', { problems: r.problems });
});
