/**
 * `yubin status`: what a qmail or Postfix admin looks at first. The running
 * server's listeners and their connections and the deliveries in progress
 * (qmail-send's `status: local 1/10 remote 0/20`) come over the control
 * socket; the queue (qmail-qstat) from the spool and the last refusals from
 * the journal, so those two answer with the server stopped as well.
 */
import type { Config } from './config/schema.js';
import { lastRefusals } from './journal/why.js';
import { controlRequest } from './queue/control.js';
import { queueEntries } from './queue/inspect.js';
import type { ServerOverview } from './server.js';
import type { LocalDomains } from './services/local-domains.js';

export interface Status {
  readonly running: ServerOverview | undefined;
  readonly queue: { readonly messages: number; readonly pendingLocal: number; readonly pendingRemote: number };
  readonly refusals: readonly string[];
}

export async function readStatus(config: Config, locals: LocalDomains): Promise<Status> {
  const answer = await controlRequest(config.dataDir, { cmd: 'overview' }, 3_000).catch(() => undefined);
  const entries = await queueEntries(config, locals);
  const pending = entries.flatMap((e) => e.recipients.filter((r) => r.status === 'pending'));
  return {
    running: answer?.ok ? answer.overview : undefined,
    queue: { messages: entries.length, pendingLocal: pending.filter((r) => r.channel === 'local').length, pendingRemote: pending.filter((r) => r.channel === 'remote').length },
    refusals: lastRefusals(config, 10),
  };
}

function uptime(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function formatStatus(st: Status, config: Config, now = Date.now()): string {
  const out: string[] = [];
  const r = st.running;
  out.push(r ? `server: running, pid ${r.pid}, up ${uptime(now - r.started)}${r.workers ? `, ${r.workers} workers` : ''}` : `server: not running (nothing answers on ${config.dataDir}/yubin.sock)`);
  out.push('listeners:');
  const width = Math.max(...config.listeners.map((l) => l.name.length));
  for (const l of config.listeners) {
    const live = r?.listeners.find((x) => x.name === l.name);
    const where = live?.address ?? `${l.listen.host}:${l.listen.port}`;
    const what = !live ? 'not listening' : live.connections === undefined ? `serving ${l.protocol === 'http' ? l.serve.join(', ') : ''}` : `${live.connections}/${live.limit} connections`;
    out.push(`  ${l.name.padEnd(width)}  ${l.protocol.padEnd(4)}  ${where.padEnd(21)}  ${what}`);
  }
  out.push(`queue: messages in queue: ${st.queue.messages}; recipients pending: local ${st.queue.pendingLocal}, remote ${st.queue.pendingRemote}`);
  out.push(r ? `status: local ${r.deliveries.local.running}/${r.deliveries.local.limit} remote ${r.deliveries.remote.running}/${r.deliveries.remote.limit}` : 'status: no deliveries (server not running)');
  out.push(st.refusals.length ? 'last refusals:' : 'last refusals: none in the journal');
  for (const line of st.refusals) out.push(`  ${line}`);
  return out.join('\n');
}
