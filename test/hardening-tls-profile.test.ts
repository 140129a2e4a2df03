/**
 * Hardening (issue 18, defect 11): TLS 1.2 accepted static-RSA key exchange
 * and CBC-SHA1 suites. Listeners now default to Mozilla's "intermediate"
 * profile (TLS 1.2 with forward-secret AEAD suites, and TLS 1.3); `modern`
 * (TLS 1.3 only) and an own TLS 1.2 cipher list are set per listener. Checked
 * with OpenSSL's client over STARTTLS (SMTP, POP3) and implicit TLS.
 */
import t from 'tap';
import { startTestServer } from '../core/testing/index.js';
import { needs, run } from './helpers.js';
import { parseConfig } from '../core/config/load.js';

/** What `openssl s_client` negotiated: the protocol and suite, or undefined when the handshake failed. */
async function handshake(port: number, starttls: 'smtp' | 'pop3' | undefined, args: string[]): Promise<string | undefined> {
  const r = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, ...(starttls ? ['-starttls', starttls] : []), ...args], { input: '', timeout: 15_000 });
  // "New, V, Cipher is C": V is the suite's own version under TLS 1.2; the session block says what was negotiated (TLS 1.3 prints none).
  const m = /New, (\S+), Cipher is (\S+)/.exec(r.stdout);
  const cipher = m?.[2];
  const protocol = /Protocol\s*:\s*(\S+)/.exec(r.stdout)?.[1] ?? m?.[1];
  return cipher && cipher !== '(NONE)' ? `${protocol} ${cipher}` : undefined;
}

const LEGACY = [
  ['-tls1_2', '-cipher', 'AES128-SHA'], // static RSA key exchange, CBC, SHA-1
  ['-tls1_2', '-cipher', 'AES256-GCM-SHA384'], // static RSA key exchange
  ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-SHA'], // CBC with SHA-1
  ['-tls1_2', '-cipher', 'ECDHE-RSA-AES256-SHA384'], // CBC
  ['-tls1_1'],
];

t.test('default (intermediate): legacy suites and versions refused, modern ones taken, on every TLS listener', needs('openssl'), async (t) => {
  const s = await startTestServer({
    listeners: [
      { name: 'smtp', tls: 'starttls', plugins: ['rcpthosts'] },
      { name: 'smtps', tls: 'implicit', plugins: ['rcpthosts'] },
      { name: 'pop3', protocol: 'pop3', tls: 'starttls', plugins: [] },
      { name: 'pop3s', protocol: 'pop3', tls: 'implicit', plugins: [] },
    ],
  });
  t.teardown(() => s.close());
  for (const [name, starttls] of [['smtp', 'smtp'], ['smtps', undefined], ['pop3', 'pop3'], ['pop3s', undefined]] as const) {
    const port = s.ports[name]!;
    for (const args of LEGACY) t.equal(await handshake(port, starttls, args), undefined, `${name}: ${args.join(' ')} refused`);
    t.equal(await handshake(port, starttls, ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-GCM-SHA256']), 'TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256', `${name}: TLS 1.2 with ECDHE and GCM`);
    t.equal(await handshake(port, starttls, ['-tls1_2', '-cipher', 'ECDHE-RSA-CHACHA20-POLY1305']), 'TLSv1.2 ECDHE-RSA-CHACHA20-POLY1305', `${name}: TLS 1.2 with ChaCha20`);
    t.match(await handshake(port, starttls, ['-tls1_3']), /^TLSv1\.3 TLS_/, `${name}: TLS 1.3`);
  }
});

t.test('per listener: modern is TLS 1.3 only; tlsCiphers opens an older suite for a client that needs it', needs('openssl'), async (t) => {
  const s = await startTestServer({
    listeners: [
      { name: 'modern', tls: 'starttls', tlsProfile: 'modern', plugins: ['rcpthosts'] },
      { name: 'legacy', tls: 'starttls', tlsCiphers: 'ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA', plugins: ['rcpthosts'] },
    ],
  });
  t.teardown(() => s.close());
  t.equal(await handshake(s.ports.modern!, 'smtp', ['-tls1_2']), undefined, 'modern: TLS 1.2 refused');
  t.match(await handshake(s.ports.modern!, 'smtp', ['-tls1_3']), /^TLSv1\.3 /, 'modern: TLS 1.3 taken');
  t.equal(await handshake(s.ports.legacy!, 'smtp', ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-SHA']), 'TLSv1.2 ECDHE-RSA-AES128-SHA', 'the suite the list names');
  t.equal(await handshake(s.ports.legacy!, 'smtp', ['-tls1_2', '-cipher', 'AES128-SHA']), undefined, 'and no other');
});

t.test('a cipher list OpenSSL does not know is a config error naming the key', async (t) => {
  t.throws(
    () => parseConfig('listeners:\n  - { name: smtp, protocol: smtp, listen: "127.0.0.1:25", tls: starttls, tlsCiphers: "NO-SUCH-CIPHER" }\n', '/etc/yubin/yubin.yaml'),
    /yubin\.yaml:2: listeners\[0\]\(smtp\)\.tlsCiphers: OpenSSL knows no cipher in "NO-SUCH-CIPHER"/,
  );
  t.throws(() => parseConfig('listeners:\n  - { name: smtp, protocol: smtp, listen: "127.0.0.1:25", tlsProfile: old }\n', '/etc/yubin/yubin.yaml'), /tlsProfile/);
});
