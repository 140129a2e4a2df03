/**
 * The contract between core/queue/smtp-client-adapter.ts and the installed
 * nodemailer: an upgrade that moves what the adapter reads fails here,
 * naming the member, before remote delivery silently stops passing DSN
 * requests on or starts sending success notices a next hop also sends.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import t from 'tap';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { X509Certificate } from 'node:crypto';
import { NODEMAILER_INTERNALS, NODEMAILER_VERSION, peerChain, serverSupports } from '../core/queue/smtp-client-adapter.js';
import { startSink } from './peers/sink.js';
import { makeCa } from './peers/ca.js';
import { needs, tempDir } from './helpers.js';

const installed = (createRequire(import.meta.url)('nodemailer/package.json') as { version: string }).version;
const pinned = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> }).dependencies.nodemailer;

t.test('nodemailer is pinned to the version the adapter was written against', async (t) => {
  t.equal(pinned, NODEMAILER_VERSION, 'package.json pins it exactly');
  t.equal(installed, NODEMAILER_VERSION, 'the installed one is that version');
});

function connect(port: number, tls = false): Promise<SMTPConnection> {
  return new Promise((resolve, reject) => {
    const conn = new SMTPConnection({ host: '127.0.0.1', port, ...(tls ? { requireTLS: true, tls: { rejectUnauthorized: false } } : { ignoreTLS: true }) });
    conn.once('error', reject);
    conn.connect(() => resolve(conn));
  });
}

t.test('the EHLO keywords are where the adapter reads them, for a server with DSN and one without', async (t) => {
  for (const dsn of [true, false]) {
    const sink = await startSink({ dsn });
    const conn = await connect(sink.port);
    for (const [name, kind] of Object.entries(NODEMAILER_INTERNALS.connection)) {
      const value: unknown = Reflect.get(conn, name);
      t.equal(Array.isArray(value) ? 'Array' : typeof value, kind, `SMTPConnection.${name} is an ${kind}`);
    }
    t.equal(serverSupports(conn, 'DSN'), dsn, `DSN ${dsn ? 'seen' : 'not seen'} when the server ${dsn ? 'announces' : 'does not announce'} it`);
    t.ok(serverSupports(conn, 'PIPELINING'), 'PIPELINING seen');
    conn.quit();
    await sink.close();
  }
});

t.test('after STARTTLS the socket shows the chain the server sent (DANE checks it against TLSA records)', needs('openssl'), async (t) => {
  const ca = await makeCa(await tempDir(t, 'yubin-ca-'));
  const leaf = await ca.issue(['mx.example.test']);
  const sink = await startSink({ tls: { key: leaf.key, cert: Buffer.concat([leaf.cert, ca.caPem]) } });
  t.teardown(() => sink.close());
  const conn = await connect(sink.port, true);
  t.equal(typeof Reflect.get(conn, '_socket'), NODEMAILER_INTERNALS.connection._socket, 'SMTPConnection._socket is an object');
  const chain = peerChain(conn);
  t.equal(chain?.length, 2, 'leaf and CA, as sent');
  t.ok(chain?.[0]?.raw.equals(new X509Certificate(leaf.cert).raw), 'the leaf first');
  t.ok(chain?.[1]?.raw.equals(new X509Certificate(ca.caPem).raw), 'then its issuer');
  conn.quit();
  const clear = await connect(sink.port);
  t.equal(peerChain(clear), undefined, 'nothing in clear text');
  clear.quit();
});
