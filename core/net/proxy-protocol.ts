/**
 * HAProxy's PROXY protocol, versions 1 (text) and 2 (binary), as a listener
 * behind a load balancer reads it: the first bytes of a connection from the
 * proxy say which client it carries, before the greeting and before any TLS.
 * Protocol-neutral: the SMTP and POP3 listeners both read it through here.
 *
 * Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
 */
import { isIPv4, isIPv6, SocketAddress, type Socket } from 'node:net';
import { ipMatcher, normalizeIp, type IpMatcher } from '../ip.js';

/** Where a connection comes from and goes to, as the session reports it. */
export interface ClientEndpoints {
  readonly remoteIp: string;
  readonly remotePort: number;
  readonly localIp: string;
  readonly localPort: number;
}

/** A header that says nothing about the client (v1 UNKNOWN, v2 LOCAL, UNSPEC or UNIX): the socket's own endpoints stand. */
export const OWN_ENDPOINTS = 'own';

export type ProxyHeader = ClientEndpoints | typeof OWN_ENDPOINTS;

/** The result of looking at the bytes received so far. */
export type ProxyParse =
  | { readonly state: 'more' }
  | { readonly state: 'done'; readonly length: number; readonly header: ProxyHeader }
  | { readonly state: 'invalid'; readonly reason: string };

/** The longest v1 line, CRLF included (spec 2.1). */
export const V1_MAX_LENGTH = 107;
/**
 * The longest v2 header we wait for: the 16 fixed bytes and an address block with
 * its TLVs. The length field allows 64 KiB; real proxies send a few hundred bytes
 * (addresses, then ALPN, authority, SSL details), so anything past this is refused
 * rather than buffered.
 */
export const V2_MAX_LENGTH = 16 + 2048;

const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

const MORE: ProxyParse = { state: 'more' };

function invalid(reason: string): ProxyParse {
  return { state: 'invalid', reason };
}

/** `buf` starts like `expected` as far as either goes. */
function startsLike(buf: Buffer, expected: Buffer): boolean {
  const n = Math.min(buf.length, expected.length);
  return buf.subarray(0, n).equals(expected.subarray(0, n));
}

/** Looks at the first bytes of a connection: a complete header, a need for more, or why it is no header. */
export function parseProxyHeader(buf: Buffer): ProxyParse {
  if (buf.length === 0) return MORE;
  if (startsLike(buf, V2_SIGNATURE)) return parseV2(buf);
  if (startsLike(buf, V1_PREFIX)) return parseV1(buf);
  return invalid('not a PROXY header');
}

const PORT = /^(?:0|[1-9]\d{0,4})$/;

function port(text: string): number | undefined {
  if (!PORT.test(text)) return undefined;
  const n = Number(text);
  return n <= 65535 ? n : undefined;
}

function parseV1(buf: Buffer): ProxyParse {
  const lf = buf.indexOf(0x0a);
  if (lf < 0) return buf.length >= V1_MAX_LENGTH ? invalid(`v1 header longer than ${V1_MAX_LENGTH} bytes`) : MORE;
  if (lf + 1 > V1_MAX_LENGTH) return invalid(`v1 header longer than ${V1_MAX_LENGTH} bytes`);
  if (buf[lf - 1] !== 0x0d) return invalid('v1 header not ended by CRLF');
  const line = buf.subarray(0, lf - 1).toString('latin1');
  const length = lf + 1;
  const fields = line.split(' ');
  // The rest of an UNKNOWN line is whatever the proxy had, and is ignored (spec 2.1).
  if (fields[1] === 'UNKNOWN') return { state: 'done', length, header: OWN_ENDPOINTS };
  if (fields.length !== 6) return invalid('v1 header: expected PROXY TCP4|TCP6 SRC DST SPORT DPORT');
  const [, proto, src, dst, sport, dport] = fields as [string, string, string, string, string, string];
  const isFamily = proto === 'TCP4' ? isIPv4 : proto === 'TCP6' ? isIPv6 : undefined;
  if (!isFamily) return invalid(`v1 header: unknown protocol ${JSON.stringify(proto.slice(0, 16))}`);
  if (!isFamily(src) || !isFamily(dst)) return invalid(`v1 header: address not ${proto}`);
  const remotePort = port(sport);
  const localPort = port(dport);
  if (remotePort === undefined || localPort === undefined) return invalid('v1 header: bad port');
  // One spelling per address (2001:DB8:0::7 is 2001:db8::7), as v2's are: the per-IP counts and rules key on it.
  const canonical = (ip: string) => (proto === 'TCP6' ? normalizeIp(new SocketAddress({ address: ip, family: 'ipv6' }).address) : ip);
  return { state: 'done', length, header: { remoteIp: canonical(src), remotePort, localIp: canonical(dst), localPort } };
}

/** An IPv6 address from its 16 bytes, in RFC 5952's short form (an IPv4-mapped one as plain IPv4). */
function ipv6(bytes: Buffer): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) return `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  // The longest run of two or more zero groups becomes '::' (the first on a tie).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

function parseV2(buf: Buffer): ProxyParse {
  if (buf.length < 16) return MORE;
  const versionCommand = buf[12]!;
  if (versionCommand >> 4 !== 2) return invalid(`v2 header: version ${versionCommand >> 4}`);
  const command = versionCommand & 0x0f;
  if (command > 1) return invalid(`v2 header: unknown command ${command}`);
  const family = buf[13]! >> 4;
  const transport = buf[13]! & 0x0f;
  if (family > 3 || transport > 2) return invalid(`v2 header: unknown address family/protocol 0x${buf[13]!.toString(16)}`);
  const length = 16 + buf.readUInt16BE(14);
  // Refused as soon as the length is known: a header this long is not waited for.
  if (length > V2_MAX_LENGTH) return invalid(`v2 header of ${length} bytes, over the limit of ${V2_MAX_LENGTH}`);
  if (buf.length < length) return MORE;
  // LOCAL: the proxy's own connection (a health check); the addresses, if any, are ignored.
  if (command === 0) return { state: 'done', length, header: OWN_ENDPOINTS };
  const block = buf.subarray(16, length);
  const needed = [0, 12, 36, 216][family]!;
  if (block.length < needed) return invalid(`v2 header: address block of ${block.length} bytes, ${needed} needed`);
  // UNSPEC, UNIX, or anything but a stream: no IP client to report, the socket's own endpoints stand.
  // Whatever follows the addresses (TLVs) is skipped.
  if ((family !== 1 && family !== 2) || transport !== 1) return { state: 'done', length, header: OWN_ENDPOINTS };
  const header =
    family === 1
      ? { remoteIp: Array.from(block.subarray(0, 4)).join('.'), localIp: Array.from(block.subarray(4, 8)).join('.'), remotePort: block.readUInt16BE(8), localPort: block.readUInt16BE(10) }
      : { remoteIp: ipv6(block.subarray(0, 16)), localIp: ipv6(block.subarray(16, 32)), remotePort: block.readUInt16BE(32), localPort: block.readUInt16BE(34) };
  return { state: 'done', length, header };
}

/** Why a header could not be read; the socket is left to the caller to close. */
export class ProxyHeaderError extends Error {}

/**
 * Reads the PROXY header off a socket, within `timeoutMs`. Resolves with what it
 * says, and leaves every byte after it on the socket (unshifted) for the session
 * or the TLS handshake; rejects with a ProxyHeaderError on a malformed or
 * oversized header, a timeout, or a client gone before it sent one.
 */
export function readProxyHeader(socket: Socket, timeoutMs: number): Promise<ProxyHeader> {
  return new Promise((resolve, reject) => {
    let received: Buffer = Buffer.alloc(0);
    let finished = false;
    const finish = (err: ProxyHeaderError | undefined, header?: ProxyHeader, rest?: Buffer) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.removeListener('readable', onReadable);
      socket.removeListener('end', onEnd);
      socket.removeListener('close', onEnd);
      socket.removeListener('error', onError);
      if (err) return reject(err);
      if (rest && rest.length > 0) socket.unshift(rest);
      resolve(header!);
    };
    const onReadable = () => {
      let chunk: Buffer | null;
      // Read no further than the header can reach: the session's bytes stay in the socket's buffer.
      while (!finished && (chunk = socket.read() as Buffer | null) !== null) {
        received = received.length ? Buffer.concat([received, chunk]) : chunk;
        const parsed = parseProxyHeader(received);
        if (parsed.state === 'invalid') return finish(new ProxyHeaderError(parsed.reason));
        if (parsed.state === 'done') return finish(undefined, parsed.header, received.subarray(parsed.length));
      }
    };
    const onEnd = () => finish(new ProxyHeaderError(received.length ? 'connection closed in the middle of the PROXY header' : 'connection closed before the PROXY header'));
    const onError = (err: Error) => finish(new ProxyHeaderError(`socket error before the PROXY header: ${err.message}`));
    const timer = setTimeout(() => finish(new ProxyHeaderError(`no complete PROXY header within ${timeoutMs} ms`)), timeoutMs);
    socket.on('readable', onReadable);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.on('error', onError);
  });
}

/** A listener's `proxy` setting, ready to use. */
export interface ProxySettings {
  readonly trusted: readonly string[];
  readonly timeout: number;
}

const trustOf = new WeakMap<ProxySettings, ProxyTrust>();

/** The trust for a listener's settings as they are now (a reload brings new ones), made once per settings object. */
export function proxyTrust(settings: ProxySettings | undefined): ProxyTrust | undefined {
  if (!settings) return undefined;
  let trust = trustOf.get(settings);
  if (!trust) trustOf.set(settings, (trust = new ProxyTrust(settings)));
  return trust;
}

/** Which peers a listener believes a PROXY header from. */
export class ProxyTrust {
  private readonly matcher: IpMatcher;

  constructor(readonly settings: ProxySettings) {
    this.matcher = ipMatcher(settings.trusted);
  }

  trusts(peerIp: string | undefined): boolean {
    return peerIp !== undefined && this.matcher.matches(peerIp);
  }

  /** Reads the header from a trusted peer: the client's endpoints, or undefined for the socket's own. */
  async read(socket: Socket): Promise<ClientEndpoints | undefined> {
    const header = await readProxyHeader(socket, this.settings.timeout);
    return header === OWN_ENDPOINTS ? undefined : header;
  }
}
