/**
 * Reads the servers' logs after the run to explain duplicates: a
 * redelivery is allowed only when the process that delivered first was
 * killed before it could record the delivery. Two successes for the same
 * (queue id, recipient) within one process, or after a process that
 * stopped cleanly, would be a bug.
 */
import { createReadStream } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';

export interface ServerEnd {
  /** Start number (1-based), as in the log file name. */
  readonly n: number;
  /** Wall-clock milliseconds when it ended. */
  readonly endedAt: number;
  /** SIGKILL by the rig, or a clean stop. */
  readonly killed: boolean;
}

export interface RedeliveryReport {
  /** (queue id, recipient) pairs logged delivered more than once. */
  readonly redeliveredPairs: number;
  /** Of those, redelivered by the same process: must be 0. */
  readonly sameProcess: number;
  /** Of those, delivered first by a process that then stopped cleanly: must be 0. */
  readonly afterCleanStop: number;
  /** Longest time from a first delivery to the kill of its process, for the allowed kind (ms). */
  readonly maxGapToKillMs: number;
  readonly examples: string[];
}

interface Success {
  readonly n: number;
  readonly time: number;
}

/** `server-NNN.log` files of the run, in start order. */
export async function analyseRedeliveries(logDir: string, ends: readonly ServerEnd[]): Promise<RedeliveryReport> {
  const files = (await readdir(logDir)).filter((f) => /^server-\d+\.log$/.test(f)).sort();
  const seen = new Map<string, Success[]>();
  for (const f of files) {
    const n = Number(/(\d+)/.exec(f)![1]);
    const lines = createInterface({ input: createReadStream(path.join(logDir, f)), crlfDelay: Infinity });
    for await (const line of lines) {
      if (!line.includes('"event":"delivery"') || !line.includes('"result":"success"')) continue;
      try {
        const rec = JSON.parse(line) as { id?: string; rcpt?: string; time?: string | number };
        if (!rec.id || !rec.rcpt) continue;
        const key = `${rec.id} ${rec.rcpt}`;
        const time = typeof rec.time === 'number' ? rec.time : Date.parse(String(rec.time));
        const list = seen.get(key);
        if (list) list.push({ n, time });
        else seen.set(key, [{ n, time }]);
      } catch {
        // a line cut by the kill
      }
    }
  }
  const endOf = new Map(ends.map((e) => [e.n, e]));
  let redeliveredPairs = 0;
  let sameProcess = 0;
  let afterCleanStop = 0;
  let maxGapToKillMs = 0;
  const examples: string[] = [];
  for (const [key, list] of seen) {
    if (list.length < 2) continue;
    redeliveredPairs++;
    const starts = list.map((s) => s.n);
    if (new Set(starts).size < starts.length) {
      sameProcess++;
      if (examples.length < 10) examples.push(`${key}: delivered twice by server start ${starts.join(', ')}`);
    }
    for (const s of list.slice(0, -1)) {
      const end = endOf.get(s.n);
      if (!end) continue;
      if (!end.killed) {
        afterCleanStop++;
        if (examples.length < 10) examples.push(`${key}: delivered by start ${s.n}, which stopped cleanly, and again later`);
      } else if (Number.isFinite(s.time)) {
        maxGapToKillMs = Math.max(maxGapToKillMs, end.endedAt - s.time);
      }
    }
  }
  return { redeliveredPairs, sameProcess, afterCleanStop, maxGapToKillMs, examples };
}
