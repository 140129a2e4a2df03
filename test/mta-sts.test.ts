/**
 * MTA-STS (RFC 8461) on the way out: the loopback DNS server publishes MX,
 * `_mta-sts` TXT and the policy host; a node:https server with a certificate
 * from a test CA serves the policy; SMTP sinks present certificates from the
 * same CA, for the MX name or for another. An enforce policy defers a
 * mismatched certificate (the reason in the queue state `queue list`
 * shows) and delivers over a matching one; testing mode delivers anyway.
 */
import t, { type Test } from 'tap';
import { makeCa, type TestCa } from './peers/ca.js';
import { policyServer, type PolicyServer } from './peers/mta-sts-policy.js';
import { startSink, type Sink } from './peers/sink.js';
import { BIRTH, injectMessage, maildir, rig } from './queue-rig.js';
import { gunzipSync } from 'node:zlib';
import type { DnsServer } from './peers/dns.js';
import { needs, tempDir } from './helpers.js';
import { mxMatches, parsePolicy } from '../core/queue/mta-sts.js';
import type { TestServer } from '../core/testing/index.js';
import type { ManualClock } from '../core/index.js';

const ZONES = (id: string) => ({
  'remote.test': { MX: [{ preference: 10, exchange: 'mx.remote.test' }] },
  'mx.remote.test': { A: ['127.0.0.1'] },
  '_mta-sts.remote.test': { TXT: [`v=STSv1; id=${id}`] },
  'mta-sts.remote.test': { A: ['127.0.0.1'] },
});

const POLICY = (mode: string, mx = 'mx.remote.test') => `version: STSv1\r\nmode: ${mode}\r\nmx: ${mx}\r\nmax_age: 86400\r\n`;

function send(server: TestServer, to = 'x@remote.test', received = BIRTH): Promise<string> {
  return injectMessage(server, { to: [to], received });
}

async function setup(t: Test, o: { policy: string; certFor: string; id?: string }): Promise<{ server: TestServer; sink: Sink; policy: PolicyServer; ca: TestCa; dns: DnsServer; clock: ManualClock }> {
  const ca = await makeCa(await tempDir(t, 'yubin-ca-'));
  const policy = await policyServer(t, ca, o.policy);
  const sink = await startSink({ tls: await ca.issue([o.certFor]) });
  t.teardown(() => sink.close());
  const { server, dns, clock } = await rig(t, {
    sinkPeer: sink,
    zones: ZONES(o.id ?? '20261204'),
    delivery: { caFile: ca.caFile, mtaSts: { port: policy.port, timeout: '5s' } },
  });
  return { server, sink, policy, ca, dns, clock };
}

t.test('policy parsing and MX patterns', async (t) => {
  const p = parsePolicy('version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\n', 'x', 0);
  t.equal(p.mode, 'enforce');
  t.ok(mxMatches(p, 'mail.example.com'));
  t.ok(mxMatches(p, 'MX1.example.net.'), 'a wildcard covers one label, any case, trailing dot');
  t.notOk(mxMatches(p, 'a.b.example.net'), 'not two labels');
  t.notOk(mxMatches(p, 'example.net'), 'not the bare domain');
  t.throws(() => parsePolicy('version: STSv1\nmode: enforce\nmax_age: 5\n', 'x', 0), /no mx line/);
  t.throws(() => parsePolicy('version: STSv2\nmode: enforce\nmx: a\nmax_age: 5\n', 'x', 0), /STSv1/);
  t.equal(parsePolicy('version: STSv1\nmode: testing\nmx: a\nmax_age: 9999999999\n', 'x', 0).maxAge, 31_557_600, 'max_age capped at a year');
});

t.test('enforce with a certificate for another name: deferred, the reason in the queue state; a matching one is delivered', needs('openssl'), async (t) => {
  const { server, sink, policy } = await setup(t, { policy: POLICY('enforce'), certFor: 'other.test' });
  const id = await send(server);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 0, 'not delivered');
  const state = await server.server.spool.readState(id);
  t.equal(state?.recipients[0]?.status, 'pending', 'deferred, not bounced');
  t.match(state?.recipients[0]?.error, /MTA-STS policy of remote\.test \(enforce\) not met: mx\.remote\.test \[127\.0\.0\.1\]: .*(altnames|certificate)/i, 'queue list shows why');
  t.equal(policy.fetches, 1);
  t.equal(server.server.queue.mtaSts.cached('remote.test')?.mode, 'enforce', 'the policy is cached');
});

t.test('enforce with the right certificate: delivered over verified TLS; the policy is fetched once for two messages', needs('openssl'), async (t) => {
  const { server, sink, policy } = await setup(t, { policy: POLICY('enforce'), certFor: 'mx.remote.test' });
  await send(server);
  await server.server.queue.idle();
  await send(server, 'y@remote.test');
  await server.server.queue.idle();
  t.equal(sink.messages.length, 2, 'delivered');
  t.same(sink.secure, [true, true], 'over TLS');
  t.equal(policy.fetches, 1, 'cached for its max_age');
  const counts = await server.server.queue.tlsReports!.counts(new Date(BIRTH).toISOString().slice(0, 10));
  t.equal(counts?.['remote.test']?.success, 1, 'TLS-RPT: one verified session (the second message reused it)');
  t.same(counts?.['remote.test']?.failures, []);
});

t.test('enforce: an MX the policy does not name is not used', needs('openssl'), async (t) => {
  const { server, sink } = await setup(t, { policy: POLICY('enforce', 'mail.elsewhere.test'), certFor: 'mx.remote.test' });
  const id = await send(server);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 0);
  t.match((await server.server.spool.readState(id))?.recipients[0]?.error, /no MX host matches its mx patterns \(mail\.elsewhere\.test\)/);
});

t.test('testing mode: a mismatched certificate does not stop delivery', needs('openssl'), async (t) => {
  const { server, sink } = await setup(t, { policy: POLICY('testing'), certFor: 'other.test' });
  await send(server);
  await server.server.queue.idle();
  t.equal(sink.messages.length, 1, 'delivered as without a policy');
});

t.test('a new id in the TXT record fetches the policy again; without a TXT record the cached policy still holds', needs('openssl'), async (t) => {
  const { server, policy, sink, dns, clock } = await setup(t, { policy: POLICY('testing'), certFor: 'mx.remote.test', id: 'one' });
  await send(server);
  await server.server.queue.idle();
  t.equal(policy.fetches, 1);
  dns.zones.set('_mta-sts.remote.test', { TXT: ['v=STSv1; id=two'] });
  policy.policy = POLICY('enforce');
  clock.advance(3_601_000); // past the DNS cache's hour for TXT answers (Node's resolver gives no TTL for them)
  await send(server, 'y@remote.test', clock.now());
  await server.server.queue.idle();
  t.equal(policy.fetches, 2, 'fetched again for the new id');
  t.equal(server.server.queue.mtaSts.cached('remote.test')?.mode, 'enforce');
  dns.zones.delete('_mta-sts.remote.test');
  clock.advance(3_601_000);
  await send(server, 'z@remote.test', clock.now());
  await server.server.queue.idle();
  t.equal(policy.fetches, 2, 'no fetch');
  t.equal(server.server.queue.mtaSts.cached('remote.test')?.mode, 'enforce', 'RFC 8461 5.1: the cached policy runs out with its max_age, not with the TXT record');
  t.equal(sink.messages.length, 3);
});

t.test('TLS-RPT: sessions to a policy domain are counted per day and reported the next day to its rua, gzipped JSON', needs('openssl'), async (t) => {
  const { server, sink, dns, clock, policy } = await setup(t, { policy: POLICY('testing'), certFor: 'other.test' });
  dns.zones.set('_smtp._tls.remote.test', { TXT: [`v=TLSRPTv1; rua=mailto:tlsrpt@example.test,https://mta-sts.remote.test:${policy.port}/tlsrpt`] });
  await send(server, 'x@remote.test', clock.now());
  await server.server.queue.idle();
  t.equal(sink.messages.length, 1, 'testing mode: delivered after the verified try failed');
  const reports = server.server.queue.tlsReports!;
  const day = new Date(clock.now()).toISOString().slice(0, 10);
  const counts = await reports.counts(day);
  t.equal(counts?.['remote.test']?.failures[0]?.resultType, 'certificate-host-mismatch');
  t.equal(await reports.sendDue(), 0, 'nothing before the day is over');
  clock.advance(86_400_000);
  t.equal(await reports.sendDue(), 2, 'the next day: one report mailed, one posted');
  t.equal(policy.posts.length, 1, 'POSTed to the https: rua');
  t.equal(policy.posts[0]?.type, 'application/tlsrpt+gzip');
  const posted = JSON.parse(gunzipSync(policy.posts[0]!.body).toString()) as { policies: Array<{ summary: Record<string, number> }> };
  t.equal(posted.policies[0]?.summary['total-failure-session-count'], 1, 'the same report');
  await server.server.queue.idle();
  const [mail] = await maildir(server, 'example.test', 'tlsrpt');
  t.ok(mail, 'the report reached the rua mailbox');
  t.match(mail, new RegExp(`\nSubject: Report Domain: remote\\.test Submitter: mx\\.test Report-ID: <${day}`));
  t.match(mail, /\nTLS-Report-Domain: remote\.test\n/);
  t.match(mail, /Content-Type: multipart\/report; report-type="tlsrpt"/);
  const b64 = /Content-Disposition: attachment; filename="mx\.test!remote\.test![^"]+\.json\.gz"\n\n([A-Za-z0-9+/=\n]+)\n--/.exec(mail!)?.[1];
  t.ok(b64, 'a .json.gz attachment');
  const report = JSON.parse(gunzipSync(Buffer.from(b64!.replace(/\n/g, ''), 'base64')).toString()) as {
    policies: Array<{ policy: { 'policy-type': string; 'policy-domain': string }; summary: Record<string, number>; 'failure-details': Array<Record<string, unknown>> }>;
    'date-range': { 'start-datetime': string };
  };
  t.equal(report['date-range']['start-datetime'], `${day}T00:00:00Z`);
  t.equal(report.policies[0]?.policy['policy-type'], 'sts');
  t.equal(report.policies[0]?.policy['policy-domain'], 'remote.test');
  t.same(report.policies[0]?.summary, { 'total-successful-session-count': 0, 'total-failure-session-count': 1 });
  t.match(report.policies[0]?.['failure-details'][0], { 'result-type': 'certificate-host-mismatch', 'receiving-mx-hostname': 'mx.remote.test', 'receiving-ip': '127.0.0.1', 'failed-session-count': 1 });
  t.equal(await reports.counts(day), undefined, 'the day is forgotten once reported');
});

t.test('TLS-RPT: a policy the TXT record announces but nobody can read is reported as sts-policy-invalid under no-policy-found', needs('openssl'), async (t) => {
  const { server, sink, clock } = await setup(t, { policy: 'this is not a policy', certFor: 'mx.remote.test' });
  await send(server, 'x@remote.test', clock.now());
  await server.server.queue.idle();
  t.equal(sink.messages.length, 1, 'delivered as without a policy');
  const counts = await server.server.queue.tlsReports!.counts(new Date(clock.now()).toISOString().slice(0, 10));
  t.match(counts?.['remote.test no-policy-found'], { policy: { type: 'no-policy-found' }, failures: [{ resultType: 'sts-policy-invalid', count: 1 }] });
});
