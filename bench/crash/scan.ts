/**
 * What is on disk after the run: the queue (still to deliver) and every
 * Maildir (delivered), matched against what the clients sent.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { bodyHash, DOMAIN, TOKEN_RE, type SentMessage } from './client.js';
import { Spool } from '../../core/queue/spool.js';

async function names(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Committed messages in the spool (`mess/ID`, the envelope a trailer in the same file). */
export async function queuedIds(dataDir: string): Promise<string[]> {
  return new Spool(path.join(dataDir, 'queue')).list().catch(() => []);
}

export interface StuckMessage {
  readonly id: string;
  readonly ageSeconds: number;
  /** No state file: no delivery was ever recorded for it in any process. */
  readonly neverTried: boolean;
  /** Recipients still pending, with when their next try is due. */
  readonly pending: Array<{ address: string; attempts: number; next: string; error?: string }>;
}

/** Describes messages that stay in the queue, from the spool alone (the server may be down). */
export async function describeQueued(dataDir: string, ids: readonly string[]): Promise<StuckMessage[]> {
  const out: StuckMessage[] = [];
  for (const id of ids) {
    try {
      const env = await new Spool(path.join(dataDir, 'queue')).readEnvelope(id);
      let state: { recipients: Array<{ address: string; status: string; attempts: number; next: number; error?: string }> } | undefined;
      try {
        state = JSON.parse(await readFile(path.join(dataDir, 'queue', 'state', `${id}.json`), 'utf8')) as typeof state;
      } catch {
        state = undefined;
      }
      out.push({
        id,
        ageSeconds: Math.round((Date.now() - env.received) / 1000),
        neverTried: state === undefined,
        pending: (state?.recipients ?? [])
          .filter((r) => r.status === 'pending')
          .map((r) => ({ address: r.address, attempts: r.attempts, next: new Date(r.next).toISOString(), ...(r.error ? { error: r.error } : {}) })),
      });
    } catch {
      // finished while we looked
    }
  }
  return out;
}

export interface LostRecipient {
  readonly token: string;
  readonly queueId: string | undefined;
  readonly recipient: string;
}

export interface ScanResult {
  /** Files in new/ and cur/ of every Maildir. */
  files: number;
  /** Acknowledged (token, recipient) pairs. */
  recipientsExpected: number;
  /** Of those, pairs with at least one file. */
  recipientsDelivered: number;
  /** Files for acknowledged pairs, duplicates included. */
  deliveredFiles: number;
  /** Extra copies: for each pair, files beyond the first. */
  duplicates: number;
  /** Pairs with more than one file. */
  duplicatePairs: number;
  /** Acknowledged pairs with no file. */
  lost: number;
  lostRecipients: LostRecipient[];
  /** Unacknowledged messages (dot written, no reply) found in at least one Maildir. */
  unacknowledgedDelivered: number;
  /** Messages whose connection broke before the dot was written, yet found in a Maildir: must be 0. */
  abortedDelivered: number;
  /** Files whose body is not what was sent (truncated, altered): must be 0. */
  corrupt: number;
  /** Files in a Maildir of someone who was not a recipient of that message (or whose Delivered-To does not match): must be 0. */
  misdelivered: number;
  /** Files with no crash token we sent (bounces, strangers). */
  foreign: number;
  /** Files left in Maildir tmp/ directories (a delivery cut between write and link, or between link and unlink). */
  maildirTmpFiles: number;
  /** Examples of each problem, for the report. */
  problems: string[];
}

const MAX_PROBLEMS = 30;

/** Scans `dataDir/mail/DOMAIN/USER/Maildir` for every user and matches the files with the messages sent. */
export async function scanMaildirs(dataDir: string, sent: ReadonlyMap<string, SentMessage>): Promise<ScanResult> {
  const r: ScanResult = {
    files: 0,
    recipientsExpected: 0,
    recipientsDelivered: 0,
    deliveredFiles: 0,
    duplicates: 0,
    duplicatePairs: 0,
    lost: 0,
    lostRecipients: [],
    unacknowledgedDelivered: 0,
    abortedDelivered: 0,
    corrupt: 0,
    misdelivered: 0,
    foreign: 0,
    maildirTmpFiles: 0,
    problems: [],
  };
  const problem = (text: string) => {
    if (r.problems.length < MAX_PROBLEMS) r.problems.push(text);
  };
  /** token → recipient → number of files */
  const found = new Map<string, Map<string, number>>();
  const domainDir = path.join(dataDir, 'mail', DOMAIN);
  for (const user of await names(domainDir)) {
    const maildir = path.join(domainDir, user, 'Maildir');
    const address = `${user}@${DOMAIN}`;
    r.maildirTmpFiles += (await names(path.join(maildir, 'tmp'))).length;
    for (const sub of ['new', 'cur']) {
      for (const name of await names(path.join(maildir, sub))) {
        const file = path.join(maildir, sub, name);
        if (!(await stat(file)).isFile()) continue;
        r.files++;
        const text = await readFile(file, 'latin1');
        const m = TOKEN_RE.exec(text);
        const msg = m ? sent.get(m[1]!) : undefined;
        if (!m || !msg) {
          r.foreign++;
          problem(`foreign file ${path.relative(dataDir, file)}: ${JSON.stringify(text.slice(0, 160))}`);
          continue;
        }
        const token = msg.token;
        const lines = text.split('\n', 2);
        if (lines[1] !== `Delivered-To: ${address}` || !msg.recipients.includes(address)) {
          r.misdelivered++;
          problem(`misdelivered: ${token} (recipients ${msg.recipients.join(' ')}) in ${path.relative(dataDir, file)}, ${JSON.stringify(lines[1])}`);
        }
        const sep = text.indexOf('\n\n');
        if (sep < 0 || bodyHash(text.slice(sep + 2)) !== msg.bodyHash) {
          r.corrupt++;
          problem(`corrupt: ${token} in ${path.relative(dataDir, file)}: body differs from what was sent (${text.length} bytes)`);
        }
        let perRcpt = found.get(token);
        if (!perRcpt) found.set(token, (perRcpt = new Map()));
        perRcpt.set(address, (perRcpt.get(address) ?? 0) + 1);
      }
    }
  }
  for (const msg of sent.values()) {
    const perRcpt = found.get(msg.token);
    if (msg.status === 'acknowledged') {
      for (const rcpt of msg.recipients) {
        r.recipientsExpected++;
        const n = perRcpt?.get(rcpt) ?? 0;
        if (n === 0) {
          r.lost++;
          if (r.lostRecipients.length < 100) r.lostRecipients.push({ token: msg.token, queueId: msg.queueId, recipient: rcpt });
          problem(`lost: ${msg.token} (queue id ${msg.queueId ?? '?'}) for ${rcpt}`);
          continue;
        }
        r.recipientsDelivered++;
        r.deliveredFiles += n;
        if (n > 1) {
          r.duplicatePairs++;
          r.duplicates += n - 1;
        }
      }
    } else if (perRcpt) {
      if (msg.status === 'unacknowledged') r.unacknowledgedDelivered++;
      else if (msg.status === 'aborted') {
        r.abortedDelivered++;
        problem(`delivered though its dot was never sent: ${msg.token}`);
      }
    }
  }
  return r;
}
