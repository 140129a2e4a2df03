/**
 * Lookups whose DNSSEC status matters (DANE, RFC 7672), asked of one
 * trusted validating resolver: normally a resolver on this host, as Postfix
 * requires for its "dane" level. node:dns does not show the AD (authentic
 * data) bit, so these queries are made here, with dns-packet: EDNS0 with the
 * DO bit and the AD bit set in the query (RFC 6840 5.7), over UDP, and again
 * over TCP when the answer was truncated.
 *
 * The AD bit is only believed because the resolver is the configured one and
 * the answer comes from its address to our socket with our query id and
 * question: the path to it must be trusted (loopback), which is why the
 * setting names one resolver and this module never falls back to another.
 *
 * Outcomes follow the DNS service's three: `found` and `none` carry `secure`
 * (the resolver validated them: a secure denial is as meaningful as a secure
 * answer), `failed` is no answer (timeout, SERVFAIL, which a validating
 * resolver also answers for bogus data).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as DnsPacket from 'dns-packet';

/** dns-packet, required at the first query: only DANE asks here, and every `yubin` command loads the core. */
let loaded: typeof DnsPacket | undefined;
const dnsPacket = (): typeof DnsPacket => (loaded ??= createRequire(import.meta.url)('dns-packet') as typeof DnsPacket);

export interface Tlsa {
  readonly usage: number;
  readonly selector: number;
  readonly matchingType: number;
  readonly data: Buffer;
}

export type SecureLookup<T> =
  /** `owner`: the name the records belong to, after any CNAMEs from the one asked. */
  | { readonly kind: 'found'; readonly secure: boolean; readonly records: readonly T[]; readonly owner: string }
  | { readonly kind: 'none'; readonly secure: boolean; readonly reason: 'nxdomain' | 'nodata' }
  | { readonly kind: 'failed'; readonly error: string };

export interface SecureDns {
  /** A and AAAA: only whether they are secure matters to DANE; the addresses come from the DNS service. */
  addresses(name: string): Promise<SecureLookup<string>>;
  tlsa(name: string): Promise<SecureLookup<Tlsa>>;
}

export interface SecureResolverOptions {
  /** `host`, `host:port` or `[v6]:port`; port 53 when left out. */
  readonly server: string;
  readonly timeoutMs: number;
}

/** Parses a resolver address as the config gives it. */
export function resolverAddress(spec: string): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(spec);
  const m = v6 ?? /^([^:]+)(?::(\d+))?$/.exec(spec);
  const host = m?.[1] ?? spec;
  if (!m || !net.isIP(host)) throw new Error(`not a resolver address (an IP, IP:port or [IPv6]:port): ${spec}`);
  const port = m[2] === undefined ? 53 : Number(m[2]);
  if (!(port >= 1 && port <= 65535)) throw new Error(`bad port in resolver address ${spec}`);
  return { host, port };
}

type Packet = DnsPacket.Packet & { flag_ad?: boolean; flag_tc?: boolean; rcode?: string };

export class SecureResolver implements SecureDns {
  private readonly host: string;
  private readonly port: number;

  constructor(private readonly options: SecureResolverOptions) {
    ({ host: this.host, port: this.port } = resolverAddress(options.server));
  }

  async addresses(name: string): Promise<SecureLookup<string>> {
    const [a, aaaa] = await Promise.all([this.query<string>(name, 'A'), this.query<string>(name, 'AAAA')]);
    if (a.kind === 'failed') return a;
    if (aaaa.kind === 'failed') return aaaa;
    const records = [...(a.kind === 'found' ? a.records : []), ...(aaaa.kind === 'found' ? aaaa.records : [])];
    // RFC 7672 2.2.2: the addresses are secure only when every answer that makes them up is.
    const secure = a.secure && aaaa.secure;
    const owner = a.kind === 'found' ? a.owner : aaaa.kind === 'found' ? aaaa.owner : name;
    return records.length ? { kind: 'found', secure, records, owner } : { kind: 'none', secure, reason: a.kind === 'none' ? a.reason : 'nodata' };
  }

  async tlsa(name: string): Promise<SecureLookup<Tlsa>> {
    const r = await this.query<{ usage: number; selector: number; matchingType: number; certificate: Buffer }>(name, 'TLSA');
    if (r.kind !== 'found') return r;
    return { ...r, records: r.records.map((x) => ({ usage: x.usage, selector: x.selector, matchingType: x.matchingType, data: x.certificate })) };
  }

  private async query<T>(name: string, type: 'A' | 'AAAA' | 'TLSA'): Promise<SecureLookup<T>> {
    const id = randomInt(0, 65536);
    const packet = dnsPacket().encode({
      type: 'query',
      id,
      flags: dnsPacket().RECURSION_DESIRED | dnsPacket().AUTHENTIC_DATA,
      questions: [{ type, name, class: 'IN' }],
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232, flags: dnsPacket().DNSSEC_OK } as DnsPacket.Answer],
    });
    try {
      let reply = await this.udp(packet, id, name, type);
      if (reply.flag_tc) reply = await this.tcp(packet, id, name, type);
      return outcome<T>(reply, name, type);
    } catch (err) {
      return { kind: 'failed', error: `${type} ${name}: ${(err as Error).message}` };
    }
  }

  private udp(packet: Buffer, id: number, name: string, type: string): Promise<Packet> {
    return new Promise((resolve, reject) => {
      const socket = dgram.createSocket(net.isIPv6(this.host) ? 'udp6' : 'udp4');
      const done = (err: Error | undefined, reply?: Packet) => {
        clearTimeout(timer);
        socket.close();
        if (err) reject(err);
        else resolve(reply!);
      };
      const timer = setTimeout(() => done(new Error(`no answer from ${this.options.server} within ${this.options.timeoutMs} ms`)), this.options.timeoutMs);
      socket.on('error', (err) => done(err));
      socket.on('message', (msg, rinfo) => {
        // Only the resolver's own answer to this question counts; anything else is ignored, not believed.
        if (rinfo.address !== this.host || rinfo.port !== this.port) return;
        const reply = decodeReply(msg, id, name, type);
        if (reply) done(undefined, reply);
      });
      socket.send(packet, this.port, this.host);
    });
  }

  private tcp(packet: Buffer, id: number, name: string, type: string): Promise<Packet> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: this.host, port: this.port });
      let buf = Buffer.alloc(0);
      const done = (err: Error | undefined, reply?: Packet) => {
        clearTimeout(timer);
        socket.destroy();
        if (err) reject(err);
        else resolve(reply!);
      };
      const timer = setTimeout(() => done(new Error(`no answer over TCP from ${this.options.server} within ${this.options.timeoutMs} ms`)), this.options.timeoutMs);
      socket.on('error', (err) => done(err));
      socket.on('connect', () => socket.write(Buffer.concat([Buffer.from([packet.length >> 8, packet.length & 0xff]), packet])));
      socket.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
        const reply = decodeReply(buf.subarray(2, 2 + buf.readUInt16BE(0)), id, name, type);
        done(reply ? undefined : new Error('a TCP answer to another question'), reply);
      });
      socket.on('end', () => done(new Error('the resolver closed the TCP connection without an answer')));
    });
  }
}

function decodeReply(msg: Buffer, id: number, name: string, type: string): Packet | undefined {
  let reply: Packet;
  try {
    reply = dnsPacket().decode(msg) as Packet;
  } catch {
    return undefined;
  }
  const q = reply.questions?.[0];
  if (reply.type !== 'response' || reply.id !== id || !q || q.type !== type || q.name.toLowerCase() !== name.toLowerCase().replace(/\.$/, '')) return undefined;
  return reply;
}

function outcome<T>(reply: Packet, name: string, type: string): SecureLookup<T> {
  const secure = reply.flag_ad === true;
  if (reply.rcode === 'NXDOMAIN') return { kind: 'none', secure, reason: 'nxdomain' };
  if (reply.rcode !== 'NOERROR') return { kind: 'failed', error: `${type} ${name}: ${reply.rcode ?? 'no rcode'}` };
  const answers = (reply.answers ?? []).filter((a) => a.type === type);
  const records = answers.map((a) => (a as { data: unknown }).data as T);
  const owner = (answers[0]?.name ?? name).toLowerCase().replace(/\.$/, '');
  return records.length ? { kind: 'found', secure, records, owner } : { kind: 'none', secure, reason: 'nodata' };
}
