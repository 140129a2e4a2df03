/**
 * One HTTPS request the way MTA-STS (policy fetch) and TLS-RPT (report
 * POST) need it: the name looked up through yubin's DNS service rather
 * than the system resolver, the certificate verified for that name
 * (extra CAs from delivery.caFile), no redirects, a time limit, and a cap
 * on the answer's size.
 */
import https from 'node:https';
import { checkServerIdentity } from 'node:tls';
import type { Dns } from '../services/dns.js';

export interface VerifiedRequest {
  readonly url: URL;
  readonly method?: 'GET' | 'POST';
  readonly body?: Buffer;
  readonly contentType?: string;
  readonly ca?: string | Buffer;
  readonly timeoutMs: number;
  /** Longest answer body kept; past it the request fails. */
  readonly maxBytes: number;
}

export async function verifiedHttps(dns: Dns, r: VerifiedRequest): Promise<{ status: number; body: Buffer }> {
  const host = r.url.hostname;
  const a = await dns.a(host);
  if (a.kind !== 'found' || !a.records.length) throw new Error(`${host} has no address${a.kind === 'failed' ? `: ${a.error}` : ''}`);
  const headers: Record<string, string | number> = { host: r.url.host };
  if (r.body) Object.assign(headers, { 'content-type': r.contentType ?? 'application/octet-stream', 'content-length': r.body.length });
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        method: r.method ?? 'GET',
        host: a.records[0],
        port: r.url.port || 443,
        path: `${r.url.pathname}${r.url.search}`,
        servername: host,
        headers,
        ca: r.ca,
        rejectUnauthorized: true,
        // The certificate must be valid for the name, whatever address we reached.
        checkServerIdentity: (_h, cert) => checkServerIdentity(host, cert),
        timeout: r.timeoutMs,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > r.maxBytes) return req.destroy(new Error(`the answer of ${host} is larger than ${r.maxBytes} bytes`));
          chunks.push(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${host} did not answer within ${r.timeoutMs} ms`)));
    req.on('error', reject);
    req.end(r.body);
  });
}
