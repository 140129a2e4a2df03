/**
 * A loopback DNS server for tests (UDP, dns-packet): answers from a zone
 * map, NXDOMAIN for names it does not know, NODATA for a known name without
 * the asked type, SERVFAIL for names listed as broken.
 */
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';

export interface ZoneRecords {
  MX?: Array<{ preference: number; exchange: string }>;
  A?: string[];
  AAAA?: string[];
  TXT?: string[];
  PTR?: string[];
  /** Answer SERVFAIL for every type. */
  servfail?: boolean;
}

export interface DnsServer {
  readonly address: string;
  readonly zones: Map<string, ZoneRecords>;
  readonly queries: Array<{ name: string; type: string }>;
  close(): Promise<void>;
}

export async function startDnsServer(zones: Record<string, ZoneRecords>): Promise<DnsServer> {
  const map = new Map(Object.entries(zones).map(([k, v]) => [k.toLowerCase(), v]));
  const queries: Array<{ name: string; type: string }> = [];
  const socket = dgram.createSocket('udp4');
  socket.on('message', (msg, rinfo) => {
    let query: dnsPacket.Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const q = query.questions?.[0];
    if (!q) return;
    queries.push({ name: q.name, type: q.type });
    const zone = map.get(q.name.toLowerCase());
    let rcode: 'NOERROR' | 'NXDOMAIN' | 'SERVFAIL' = 'NOERROR';
    const answers: dnsPacket.Answer[] = [];
    if (!zone) rcode = 'NXDOMAIN';
    else if (zone.servfail) rcode = 'SERVFAIL';
    else {
      const base = { name: q.name, ttl: 60, class: 'IN' as const };
      if (q.type === 'MX') for (const mx of zone.MX ?? []) answers.push({ ...base, type: 'MX', data: mx });
      if (q.type === 'A') for (const a of zone.A ?? []) answers.push({ ...base, type: 'A', data: a });
      if (q.type === 'AAAA') for (const a of zone.AAAA ?? []) answers.push({ ...base, type: 'AAAA', data: a });
      // A TXT string longer than 255 octets goes out as several character-strings (a DKIM key is ~400).
      if (q.type === 'TXT') for (const t of zone.TXT ?? []) answers.push({ ...base, type: 'TXT', data: (t.match(/[\s\S]{1,255}/g) ?? ['']).map((c) => Buffer.from(c)) });
      if (q.type === 'PTR') for (const p of zone.PTR ?? []) answers.push({ ...base, type: 'PTR', data: p });
    }
    const flags = (rcode === 'NXDOMAIN' ? 3 : rcode === 'SERVFAIL' ? 2 : 0) | dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE;
    const reply = dnsPacket.encode({ id: query.id, type: 'response', flags, questions: query.questions, answers });
    socket.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  const { port } = socket.address();
  return {
    address: `127.0.0.1:${port}`,
    zones: map,
    queries,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
