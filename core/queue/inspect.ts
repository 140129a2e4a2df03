/**
 * `yubin queue stat|list|flush|delete|bounce`: qmail-qstat and qmail-qread,
 * plus the controls qmail only had as signals. Reading works straight from
 * the spool whether or not the server runs; changes go through the running
 * server's control socket, or straight to the spool when none runs.
 */
import path from 'node:path';
import type { Config } from '../config/schema.js';
import { LocalDomains } from '../services/local-domains.js';
import { splitAddress } from '../address.js';
import { CommandError } from '../plugin.js';
import { controlRequest } from './control.js';
import { initialState, Spool, type Envelope, type QueueState, type RecipientState } from './spool.js';

export class QueueCommandError extends CommandError {}

export interface QueuedRecipient {
  readonly address: string;
  readonly channel: 'local' | 'remote';
  readonly status: RecipientState['status'];
  readonly attempts: number;
  readonly nextAttempt: string | undefined;
  readonly lastError: string | undefined;
}

export interface QueueEntry {
  readonly id: string;
  readonly received: string;
  readonly ageSeconds: number;
  readonly size: number;
  readonly sender: string;
  readonly kind: string;
  readonly recipients: QueuedRecipient[];
}

function openSpool(config: Config): Spool {
  return new Spool(path.join(config.dataDir, 'queue'));
}

async function entry(spool: Spool, id: string, locals: LocalDomains, now: number): Promise<QueueEntry | undefined> {
  let env: Envelope;
  let state: QueueState | undefined;
  try {
    env = await spool.readEnvelope(id);
    state = await spool.readState(id);
  } catch {
    return undefined; // finished while we looked
  }
  const rstate = new Map((state?.recipients ?? []).map((r) => [r.address, r]));
  return {
    id,
    received: new Date(env.received).toISOString(),
    ageSeconds: Math.max(0, Math.round((now - env.received) / 1000)),
    size: Buffer.byteLength(env.prependHeaders) + env.size,
    sender: env.sender,
    kind: env.kind ?? 'message',
    recipients: env.recipients.map(({ address }) => {
      const r = rstate.get(address);
      return {
        address,
        channel: locals.has(splitAddress(address).domain) ? 'local' : 'remote',
        status: r?.status ?? 'pending',
        attempts: r?.attempts ?? 0,
        nextAttempt: (r?.status ?? 'pending') === 'pending' ? new Date(r?.next ?? env.received).toISOString() : undefined,
        lastError: r?.error,
      };
    }),
  };
}

/** `locals`: the local domains with the mailbox plugins' virtual ones; default the config's list. */
export async function queueEntries(config: Config, locals: LocalDomains = new LocalDomains(config.localDomains)): Promise<QueueEntry[]> {
  const spool = openSpool(config);
  const now = Date.now();
  const out: QueueEntry[] = [];
  for (const id of await spool.list().catch(() => [])) {
    const e = await entry(spool, id, locals, now);
    if (e) out.push(e);
  }
  return out;
}

/** qmail-qstat's two numbers, and the recipients still to do by channel. */
export async function queueStat(config: Config, locals?: LocalDomains): Promise<string> {
  const entries = await queueEntries(config, locals);
  const pending = entries.flatMap((e) => e.recipients.filter((r) => r.status === 'pending'));
  return [
    `messages in queue: ${entries.length}`,
    `recipients pending: ${pending.length} (local ${pending.filter((r) => r.channel === 'local').length}, remote ${pending.filter((r) => r.channel === 'remote').length})`,
  ].join('\n');
}

function age(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

/** Non-printable characters shown as `_`, as qmail-qread does. */
const printable = (s: string) => s.replace(/[^\x20-\x7e]/g, '_');

/** qmail-qread's layout: a line per message, then a line per recipient. */
export function formatList(entries: readonly QueueEntry[]): string {
  const lines: string[] = [];
  for (const e of entries) {
    lines.push(`${e.id}  ${e.received}  age ${age(e.ageSeconds)}  ${e.size} bytes  <${printable(e.sender)}>${e.kind !== 'message' ? `  (${e.kind})` : ''}`);
    for (const r of e.recipients) {
      const status = r.status === 'pending' ? `next ${r.nextAttempt}, ${r.attempts} attempts` : r.status;
      lines.push(`\t${r.channel}\t<${printable(r.address)}>\t${status}`);
      if (r.lastError && r.status !== 'delivered') lines.push(`\t\tlast error: ${printable(r.lastError.replace(/\n/g, ' '))}`);
    }
  }
  return lines.join('\n');
}

export async function queueFlush(config: Config): Promise<string> {
  const res = await controlRequest(config.dataDir, { cmd: 'flush' });
  if (!res) throw new QueueCommandError('the server is not running: queued messages are tried when it starts', 1);
  if (!res.ok) throw new QueueCommandError(res.error, 1);
  return `flush: ${res.messages ?? 0} messages scheduled for delivery now`;
}

export async function queueChange(config: Config, cmd: 'delete' | 'bounce', id: string): Promise<string> {
  const spool = openSpool(config);
  if (!(await spool.has(id))) throw new QueueCommandError(`no message ${id} in the queue`, 2);
  const sender = (await spool.readEnvelope(id)).sender;
  const res = await controlRequest(config.dataDir, { cmd, id });
  if (res && !res.ok) throw new QueueCommandError(res.error, 2);
  if (!res) {
    // No server: change the spool directly; the next start sends the bounce.
    if (cmd === 'delete') await spool.remove(id);
    else {
      const env = await spool.readEnvelope(id);
      const state = (await spool.readState(id)) ?? initialState(env);
      state.bounceRequested = true;
      await spool.writeState(id, state);
    }
  }
  if (cmd === 'delete') return `message ${id} deleted`;
  return `message ${id}: its pending recipients bounce to ${sender ? `<${sender}>` : 'the postmaster (null sender)'}${res ? '' : ' when the server starts'}`;
}
