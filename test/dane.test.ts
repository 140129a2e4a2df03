/**
 * DANE (RFC 7672) on the way out, against a real validating resolver:
 * unbound serves zones the test signs with ldns-signzone (their DS records
 * its trust anchors) and one it leaves unsigned. yubin's DNS service and
 * its trusted DANE resolver are both that unbound, so the MX, address,
 * TLSA, `_mta-sts` and `_smtp._tls` records all come from it.
 *
 * One SMTP sink with STARTTLS (a leaf from a test CA, sent with the CA
 * certificate) stands behind every MX name; what differs is the TLSA
 * records published for each.
 */
import { X509Certificate, createHash } from 'node:crypto';
import t, { type Test } from 'tap';
import { makeCa } from './peers/ca.js';
import { policyServer } from './peers/mta-sts-policy.js';
import { startSink, type Sink } from './peers/sink.js';
import { startUnbound, type Zone } from './peers/unbound.js';
import { gunzipSync } from 'node:zlib';
import { BIRTH, injectMessage, maildir, rig, send } from './queue-rig.js';
import type { ManualClock } from '../core/index.js';
import { needs, tempDir } from './helpers.js';
import { SecureResolver, resolverAddress } from '../core/services/secure-dns.js';
import { checkChain, usableTlsa } from '../core/queue/dane.js';
import type { TestServer } from '../core/testing/index.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface World {
  readonly server: TestServer;
  readonly sink: Sink;
  readonly resolver: string;
  readonly clock: ManualClock;
}

async function world(t: Test): Promise<World> {
  const dir = await tempDir(t, 'yubin-dane-');
  const ca = await makeCa(dir);
  const leaf = await ca.issue(['mx.good.test', 'mx.ta.test', 'mx.pkix.test', 'mx.plain.test']);
  // The CA goes in the chain the server sends: a DANE-TA record names it (RFC 7672 3.2.1).
  const sink = await startSink({ tls: { key: leaf.key, cert: Buffer.concat([leaf.cert, ca.caPem]) } });
  t.teardown(() => sink.close());
  const spki = sha256(new X509Certificate(leaf.cert).publicKey.export({ type: 'spki', format: 'der' }));
  const caDigest = sha256(new X509Certificate(ca.caPem).raw);
  const tlsa = (host: string, rdata: string) => `_${sink.port}._tcp.${host} IN TLSA ${rdata}`;
  const mx = ['@ IN MX 10 mx', 'mx IN A 127.0.0.1'];
  const policy = await policyServer(t, ca, 'version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmax_age: 86400\r\n', 'sts.test');
  const zones: Zone[] = [
    { name: 'good.test', signed: true, records: [...mx, tlsa('mx', `3 1 1 ${spki}`)] },
    { name: 'bad.test', signed: true, records: [...mx, tlsa('mx', `3 1 1 ${'ab'.repeat(32)}`), '_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.test"'] },
    { name: 'ta.test', signed: true, records: [...mx, tlsa('mx', `2 0 1 ${caDigest}`)] },
    { name: 'tawrong.test', signed: true, records: [...mx, tlsa('mx', `2 0 1 ${caDigest}`)] },
    { name: 'pkix.test', signed: true, records: [...mx, tlsa('mx', `1 1 1 ${'cd'.repeat(32)}`)] },
    { name: 'nodane.test', signed: true, records: mx },
    // The MX host is an alias of mx.good.test: that name's TLSA records count first, not the alias's own (wrong) one.
    { name: 'alias.test', signed: true, records: ['@ IN MX 10 mx', 'mx IN CNAME mx.good.test.', tlsa('mx', `3 1 1 ${'ab'.repeat(32)}`)] },
    // Unsigned: its TLSA record proves nothing and must not stop delivery.
    { name: 'plain.test', records: [...mx, tlsa('mx', `3 1 1 ${'ef'.repeat(32)}`)] },
    { name: 'bogus.test', bogus: true, records: [...mx, tlsa('mx', `3 1 1 ${spki}`)] },
    {
      name: 'sts.test',
      records: [...mx, '_mta-sts IN TXT "v=STSv1; id=20261204"', 'mta-sts IN A 127.0.0.1', '_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.test"'],
    },
  ];
  const unbound = await startUnbound(t, dir, zones);
  const { server, clock } = await rig(t, {
    sinkPeer: sink,
    // bad.test and sts.test taken over SMTP too, as an MX for them would: TLS-Required is read from the message as it arrives.
    plugins: { rcpthosts: { domains: ['example.test', 'localhost', 'bad.test', 'sts.test'] } },
    config: { dns: { servers: [unbound.address], timeout: '2s', tries: 1 } },
    delivery: { caFile: ca.caFile, mtaSts: { port: policy.port, timeout: '5s' }, dane: { enabled: true, resolver: unbound.address, timeout: '2s' } },
  });
  return { server, sink, resolver: unbound.address, clock };
}

async function deliver(w: World, to: string): Promise<{ delivered: boolean; error: string | undefined; status: string | undefined }> {
  const before = w.sink.messages.length;
  const id = await injectMessage(w.server, { to: [to], received: BIRTH });
  await w.server.server.queue.idle();
  const state = await w.server.server.spool.readState(id);
  return { delivered: w.sink.messages.length > before, error: state?.recipients[0]?.error, status: state?.recipients[0]?.status };
}

t.test('the resolver: AD bit for signed zones, none for unsigned, SERVFAIL for bogus', needs('unbound', 'ldns-signzone', 'ldns-keygen', 'openssl'), async (t) => {
  const { resolver } = await world(t);
  const dns = new SecureResolver({ server: resolver, timeoutMs: 2000 });
  const good = await dns.addresses('mx.good.test');
  t.match(good, { kind: 'found', secure: true, records: ['127.0.0.1'] }, 'signed addresses are secure');
  const tlsa = await dns.tlsa('_25._tcp.mx.good.test');
  t.match(tlsa, { kind: 'none', secure: true, reason: 'nxdomain' }, 'a signed denial is secure too');
  t.match(await dns.addresses('mx.plain.test'), { kind: 'found', secure: false }, 'unsigned: insecure');
  t.match(await dns.addresses('mx.bogus.test'), { kind: 'failed' }, 'bogus: no answer (SERVFAIL)');
  t.same(resolverAddress('[::1]:5353'), { host: '::1', port: 5353 });
  t.throws(() => resolverAddress('resolver.example'), /not a resolver address/);
  t.notOk(usableTlsa({ usage: 1, selector: 1, matchingType: 1, data: Buffer.alloc(32) }), 'PKIX-EE is unusable for SMTP');
  t.notOk(usableTlsa({ usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(31) }), 'a SHA2-256 digest of the wrong length is unusable');
  t.match(checkChain([], [], ['mx.good.test'], Date.now()), { ok: false, why: /no certificate/ });
});

t.test('DANE on the way out: right TLSA delivered, wrong TLSA deferred with the reason in the queue state', needs('unbound', 'ldns-signzone', 'ldns-keygen', 'openssl'), async (t) => {
  const w = await world(t);
  const good = await deliver(w, 'x@good.test');
  t.ok(good.delivered, 'DANE-EE 3 1 1 matching the server key: delivered');
  t.equal(w.sink.secure.at(-1), true, 'over TLS');

  const bad = await deliver(w, 'x@bad.test');
  t.notOk(bad.delivered, 'a TLSA record that matches nothing: not delivered');
  t.equal(bad.status, 'pending', 'deferred, not bounced');
  t.match(bad.error, /DANE TLSA authentication for bad\.test failed: mx\.bad\.test \[127\.0\.0\.1\]: no TLSA record matches the certificate/, 'queue list shows why');

  t.ok((await deliver(w, 'x@ta.test')).delivered, 'DANE-TA 2 0 1 naming the CA the chain leads to, the leaf named for the MX: delivered');
  const tawrong = await deliver(w, 'x@tawrong.test');
  t.notOk(tawrong.delivered, 'DANE-TA whose leaf is not for the MX host: not delivered');
  t.match(tawrong.error, /is not for mx\.tawrong\.test/);

  t.ok((await deliver(w, 'x@pkix.test')).delivered, 'only unusable (PKIX-EE) records: TLS required but not authenticated, delivered');
  t.equal(w.sink.secure.at(-1), true, 'over TLS');
  t.ok((await deliver(w, 'x@nodane.test')).delivered, 'a signed zone without TLSA: delivered as usual');
  t.ok((await deliver(w, 'x@alias.test')).delivered, 'an MX host that is a CNAME: the TLSA records of the name it expands to (RFC 7672 2.2.2)');
  t.ok((await deliver(w, 'x@plain.test')).delivered, 'an unsigned zone: its TLSA record is ignored');

  const bogus = await deliver(w, 'x@bogus.test');
  t.notOk(bogus.delivered, 'bogus DNSSEC: not delivered');
  t.equal(bogus.status, 'pending', 'deferred');

  // TLS-RPT counts DANE sessions under policy-type tlsa, per MX host.
  const reports = w.server.server.queue.tlsReports!;
  const day = new Date(w.clock.now()).toISOString().slice(0, 10);
  const counts = await reports.counts(day);
  t.equal(counts?.['good.test tlsa mx.good.test']?.success, 1, 'TLS-RPT: the good session');
  t.match(counts?.['bad.test tlsa mx.bad.test']?.failures, [{ resultType: 'tlsa-invalid', mx: 'mx.bad.test', ip: '127.0.0.1', count: 1 }]);
  w.clock.advance(86_400_000);
  t.equal(await reports.sendDue(), 1, 'one report: bad.test is the only one publishing a rua');
  await w.server.server.queue.idle();
  const [mail] = await maildir(w.server, 'example.test', 'tlsrpt');
  const b64 = /filename="[^"]+\.json\.gz"\n\n([A-Za-z0-9+/=\n]+)\n--/.exec(mail ?? '')?.[1];
  const report = JSON.parse(gunzipSync(Buffer.from(b64 ?? '', 'base64')).toString()) as { policies: Array<{ policy: Record<string, unknown>; 'failure-details': unknown[] }> };
  t.match(report.policies[0]?.policy, { 'policy-type': 'tlsa', 'policy-string': [`3 1 1 ${'ab'.repeat(32)}`], 'policy-domain': 'bad.test', 'mx-host': ['mx.bad.test'] });
  t.match(report.policies[0]?.['failure-details'], [{ 'result-type': 'tlsa-invalid', 'receiving-mx-hostname': 'mx.bad.test', 'failed-session-count': 1 }]);
});

t.test('MTA-STS records served by unbound: an enforce policy with a certificate for other names is deferred', needs('unbound', 'ldns-signzone', 'ldns-keygen', 'openssl'), async (t) => {
  const w = await world(t);
  const sts = await deliver(w, 'x@sts.test');
  t.notOk(sts.delivered);
  t.match(sts.error, /MTA-STS policy of sts\.test \(enforce\) not met: mx\.sts\.test \[127\.0\.0\.1\]: .*(altnames|certificate)/i);
  t.equal(w.server.server.queue.mtaSts.cached('sts.test')?.mode, 'enforce', 'the _mta-sts TXT record led to the policy');
});

t.test('TLS-Required: No (RFC 8689 5): the sender waives the domain\'s DANE and MTA-STS policies', needs('unbound', 'ldns-signzone', 'ldns-keygen', 'openssl'), async (t) => {
  const w = await world(t);
  const before = w.sink.messages.length;
  await send(w.server, 'alice@example.test', ['x@bad.test'], 'Subject: waived\r\nTLS-Required: No\r\n\r\nbody\r\n');
  await send(w.server, 'alice@example.test', ['x@sts.test'], 'Subject: waived\r\nTLS-Required: no\r\n\r\nbody\r\n');
  await w.server.server.queue.idle();
  t.equal(w.sink.messages.length, before + 2, 'both delivered despite the TLSA mismatch and the enforce policy');
  const kept = await send(w.server, 'alice@example.test', ['y@bad.test'], 'Subject: not waived\r\nTLS-Required: yes\r\n\r\nbody\r\n');
  await w.server.server.queue.idle();
  t.equal(w.sink.messages.length, before + 2, 'any other value waives nothing');
  t.match((await w.server.server.spool.readState(kept))?.recipients[0]?.error, /DANE TLSA authentication for bad\.test failed/);
});
