/**
 * The anti-spam benchmark's DNS server, run as its own process (so its CPU is
 * apart from the load client's): UDP on 127.0.0.1, dns-packet. It answers
 * PTR and A from a fixed record map (NXDOMAIN for names it does not know),
 * and forwards queries under the DNSBL zones, unchanged but for the query
 * ID, to rbldnsd on loopback: the one resolver yubin is pointed at, as a
 * recursive resolver in front of an rbldnsd would be.
 *
 * Input: YUBIN_BENCH_DNS, JSON `{ "records": { name: { "A"?: [..], "PTR"?: [..] } },
 * "forwardZones": ["bl1.bench.test", ...], "forwardTo": PORT, "ttl": SECONDS }`.
 * A TXT query for stats.bench.invalid answers with the counters as JSON.
 * Output: one line `{"port": N}` on stdout once bound. Exits on SIGTERM,
 * SIGINT or the end of stdin.
 */
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';

interface Input {
  readonly records: Record<string, { A?: string[]; PTR?: string[] }>;
  readonly forwardZones: string[];
  readonly forwardTo: number;
  readonly ttl: number;
}

const input = JSON.parse(process.env.YUBIN_BENCH_DNS ?? 'null') as Input | null;
if (!input) {
  process.stderr.write('dns-server: YUBIN_BENCH_DNS is not set\n');
  process.exit(2);
}
const records = new Map(Object.entries(input.records).map(([k, v]) => [k.toLowerCase(), v]));
const zones = input.forwardZones.map((z) => z.toLowerCase());
const forwarded = (name: string) => zones.some((z) => name === z || name.endsWith('.' + z));

const socket = dgram.createSocket('udp4');
const upstream = dgram.createSocket('udp4');
/** Our upstream query ID → the client's ID and address. */
const pending = new Map<number, { id: number; port: number; address: string; at: number }>();
let nextId = 1;
const stats = { answered: 0, forwarded: 0, dropped: 0 };

upstream.on('message', (msg) => {
  if (msg.length < 2) return;
  const p = pending.get(msg.readUInt16BE(0));
  if (!p) return;
  pending.delete(msg.readUInt16BE(0));
  msg.writeUInt16BE(p.id, 0);
  socket.send(msg, p.port, p.address);
});

socket.on('message', (msg, rinfo) => {
  let query: dnsPacket.Packet;
  try {
    query = dnsPacket.decode(msg);
  } catch {
    return;
  }
  const q = query.questions?.[0];
  if (!q) return;
  const name = q.name.toLowerCase();
  if (name === 'stats.bench.invalid' && q.type === 'TXT') {
    // The bench's control query (not counted): the counters so far.
    const txt = { name: q.name, ttl: 0, class: 'IN' as const, type: 'TXT' as const, data: JSON.stringify(stats) };
    socket.send(dnsPacket.encode({ id: query.id, type: 'response', flags: dnsPacket.AUTHORITATIVE_ANSWER, questions: query.questions, answers: [txt] }), rinfo.port, rinfo.address);
    return;
  }
  if (forwarded(name)) {
    let id = nextId;
    nextId = (nextId % 65535) + 1;
    if (pending.has(id)) {
      stats.dropped++;
      pending.delete(id);
    }
    pending.set(id, { id: query.id ?? 0, port: rinfo.port, address: rinfo.address, at: Date.now() });
    const out = Buffer.from(msg);
    out.writeUInt16BE(id, 0);
    upstream.send(out, input.forwardTo, '127.0.0.1');
    stats.forwarded++;
    return;
  }
  stats.answered++;
  const rec = records.get(name);
  const answers: dnsPacket.Answer[] = [];
  const base = { name: q.name, ttl: input.ttl, class: 'IN' as const };
  if (rec && q.type === 'A') for (const a of rec.A ?? []) answers.push({ ...base, type: 'A', data: a });
  if (rec && q.type === 'PTR') for (const p of rec.PTR ?? []) answers.push({ ...base, type: 'PTR', data: p });
  const flags = (rec ? 0 : 3) | dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE;
  socket.send(dnsPacket.encode({ id: query.id, type: 'response', flags, questions: query.questions, answers }), rinfo.port, rinfo.address);
});

// Forwarded queries that never got an answer are forgotten after 10 s.
setInterval(() => {
  const old = Date.now() - 10_000;
  for (const [k, p] of pending) if (p.at < old) pending.delete(k);
}, 5_000).unref();

const stop = () => {
  process.stderr.write(`dns-server: ${JSON.stringify(stats)}\n`);
  process.exit(0);
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
process.stdin.on('end', stop).resume();

await new Promise<void>((resolve) => upstream.bind(0, '127.0.0.1', () => resolve()));
await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
process.stdout.write(JSON.stringify({ port: socket.address().port }) + '\n');
