/**
 * An MTA-STS policy host for tests: node:https on loopback with a
 * certificate for mta-sts.DOMAIN from the test CA, serving the policy at
 * /.well-known/mta-sts.txt (counting fetches) and taking TLS reports POSTed
 * to /tlsrpt.
 */
import https from 'node:https';
import type { Test } from 'tap';
import type { TestCa } from './ca.js';

export interface PolicyServer {
  readonly port: number;
  fetches: number;
  policy: string;
  /** TLS reports POSTed to /tlsrpt. */
  readonly posts: Array<{ type: string; body: Buffer }>;
}

export async function policyServer(t: Test, ca: TestCa, policy: string, domain = 'remote.test'): Promise<PolicyServer> {
  const pair = await ca.issue([`mta-sts.${domain}`]);
  const state: PolicyServer = { port: 0, fetches: 0, policy, posts: [] };
  const server = https.createServer(pair, (req, res) => {
    if (req.method === 'POST' && req.url === '/tlsrpt') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        state.posts.push({ type: req.headers['content-type'] ?? '', body: Buffer.concat(chunks) });
        res.writeHead(201).end();
      });
      return;
    }
    if (req.url !== '/.well-known/mta-sts.txt') {
      res.writeHead(404).end();
      return;
    }
    state.fetches++;
    res.writeHead(200, { 'content-type': 'text/plain' }).end(state.policy);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  (state as { port: number }).port = (server.address() as { port: number }).port;
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return state;
}
