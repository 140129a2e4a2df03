/**
 * mailauth: a message submitted by an authenticated user is DKIM-signed; a
 * second listener, asking a loopback DNS server that publishes the key, SPF
 * and DMARC, verifies it as pass; a tampered copy fails and, with
 * enforceDmarc and p=reject, is refused.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { answer, definePlugin } from '../../core/index.js';
import { startTestServer, type TestServer } from '../../core/testing/index.js';
import { dkimRecord, generateKey } from '../../plugins/mailauth/keys.js';
import { tempDir, yubin } from '../helpers.js';
import { startDnsServer } from '../peers/dns.js';

const auth = definePlugin({
  name: 'auth-stub',
  setup: () => ({ hooks: { auth: ({ password }) => (password === 'secret' ? answer.accept() : answer.continue()) } }),
});

const MESSAGE = ['From: Alice <alice@example.test>', 'To: bob@remote.test', 'Subject: signed', 'Date: Thu, 26 Nov 2026 03:00:00 +0000', 'Message-ID: <1@example.test>', '', 'Hello Bob,', 'this is signed.', ''].join('\n');

async function rig(t: Parameters<typeof tempDir>[0], extra: Record<string, unknown> = {}) {
  const dataDir = await tempDir(t);
  const key = await generateKey(path.join(dataDir, 'dkim'), 'example.test', 'sel1');
  const record = dkimRecord('example.test', 'sel1', key.pem);
  const dns = await startDnsServer({
    [record.name]: { TXT: [record.value] },
    'example.test': { TXT: ['v=spf1 ip4:127.0.0.1 -all'], MX: [{ preference: 10, exchange: 'mx.example.test' }], A: ['127.0.0.1'] },
    '_dmarc.example.test': { TXT: ['v=DMARC1; p=reject'] },
  });
  t.teardown(() => dns.close());
  const server = await startTestServer({
    dataDir,
    listeners: [
      { name: 'submission', allowInsecureAuth: true, plugins: [auth, 'mailauth'] },
      { name: 'mx', plugins: ['mailauth'] },
    ],
    pluginOptions: { mailauth: { sign: { 'example.test': { selector: 'sel1' } }, enforceDmarc: true, ...extra } },
    config: { dns: { servers: [dns.address], timeout: 1000, tries: 1 } },
  });
  t.teardown(async () => {
    await server.close();
  });
  return server;
}

async function submit(server: TestServer): Promise<string> {
  const c = await server.connect({ listener: 'submission' });
  await c.ehlo('client.example');
  t.equal((await c.command(`AUTH PLAIN ${Buffer.from('\0alice@example.test\0secret').toString('base64')}`)).code, 235);
  const r = await c.mail({ from: 'alice@example.test', to: 'bob@remote.test', data: MESSAGE });
  await c.quit();
  t.equal(r.data?.code, 250);
  const q = await server.queued();
  return q[q.length - 1]!.text;
}

/** From 127.0.0.1, which example.test's SPF names, or from another address, which it does not. */
async function deliverTo(server: TestServer, text: string, localAddress = '127.0.0.1') {
  const c = await server.connect({ listener: 'mx', localAddress });
  await c.ehlo('mx.example.test');
  const r = await c.mail({ from: 'alice@example.test', to: 'postmaster@example.test', data: text.replace(/\r\n/g, '\n') });
  await c.quit();
  return r;
}

t.test('signed at submission, verified as dkim=pass spf=pass dmarc=pass at the MX', async (t) => {
  const server = await rig(t);
  const signed = await submit(server);
  t.match(signed, /^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=example\.test;[\s\S]*s=sel1/m, 'a DKIM signature for the From domain');
  const r = await deliverTo(server, signed);
  t.equal(r.data?.code, 250);
  const got = (await server.queued()).find((m) => m.envelope.listener === 'mx')!;
  t.match(got.text, /^Authentication-Results: mx\.test;[\s\S]*dkim=pass[\s\S]*spf=pass[\s\S]*dmarc=pass/m, 'all three pass');
  t.ok(server.logs.some((l) => l.msg === 'mailauth: checked' && l.dmarc === 'pass'), 'logged');
});

t.test('a tampered body fails DKIM and DMARC; with p=reject and enforceDmarc it is refused', async (t) => {
  const server = await rig(t);
  const signed = await submit(server);
  const tampered = signed.replace('this is signed.', 'this is NOT what was signed.');
  // From an address SPF does not name either: neither DKIM nor SPF aligns, so DMARC fails.
  const r = await deliverTo(server, tampered, '127.0.0.7');
  t.equal(r.data?.code, 550);
  t.equal(r.data?.enhanced, '5.7.1');
  t.match(r.data?.text, /DMARC policy of example\.test/);
  t.ok(server.logs.some((l) => l.msg === 'mailauth: checked' && l.dmarc === 'fail'));
});

t.test('yubin dkim keygen writes the key and prints the record', async (t) => {
  const dir = await tempDir(t);
  const config = path.join(dir, 'yubin.yaml');
  await writeFile(config, 'dataDir: ./var\nlisteners:\n  - { name: smtp, protocol: smtp, listen: "127.0.0.1:0" }\n');
  const r = await yubin(['dkim', 'keygen', 'example.test', '--selector', 's2026', '-c', config]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /wrote .*var\/dkim\/example\.test\.s2026\.key/);
  t.match(r.stdout, /^s2026\._domainkey\.example\.test\. IN TXT \( "v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+/m);
  const again = await yubin(['dkim', 'keygen', 'example.test', '--selector', 's2026', '-c', config]);
  t.equal(again.code, 2);
  t.match(again.stderr, /^yubin: a key for example\.test with selector s2026 exists/);
  t.equal((await yubin(['dkim', 'keygen', 'not a domain', '-c', config])).code, 2);
});

t.test('enforceSpf: a sender whose SPF fails for this client is refused at MAIL', async (t) => {
  const server = await rig(t, { enforceSpf: true });
  const refused = await server.connect({ listener: 'mx', localAddress: '127.0.0.7' });
  await refused.ehlo('forger.example');
  const r = await refused.command('MAIL FROM:<alice@example.test>');
  t.equal(r.code, 550);
  t.equal(r.enhanced, '5.7.23');
  t.match(r.text, /SPF check failed: example\.test does not designate 127\.0\.0\.7/);
  await refused.quit();
  const allowed = await server.connect({ listener: 'mx', localAddress: '127.0.0.1' });
  await allowed.ehlo('mx.example.test');
  t.equal((await allowed.command('MAIL FROM:<alice@example.test>')).code, 250, 'the listed address passes');
  await allowed.command('RSET');
  t.equal((await allowed.command('MAIL FROM:<someone@nospf.test>')).code, 250, 'no SPF record is not a fail');
  await allowed.quit();
});
