/**
 * Certificates for listeners with TLS. A listener that names no certificate
 * gets a self-signed one, generated once into dataDir/tls, so STARTTLS works
 * out of the box; production configs name a real one.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';

export interface KeyPair {
  readonly key: Buffer;
  readonly cert: Buffer;
}

export async function loadKeyPair(certPath: string, keyPath: string): Promise<KeyPair> {
  const [cert, key] = await Promise.all([readFile(certPath), readFile(keyPath)]);
  return { cert, key };
}

/** The self-signed pair in `dir`, created on first use. */
export async function selfSignedKeyPair(dir: string, hostname: string): Promise<KeyPair & { created: boolean }> {
  const certPath = path.join(dir, 'selfsigned.crt');
  const keyPath = path.join(dir, 'selfsigned.key');
  try {
    return { ...(await loadKeyPair(certPath, keyPath)), created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // Loaded here, not at start: it is the heaviest import of the core (x509 libraries), and few starts make a certificate.
  const selfsigned = await import('selfsigned');
  const pems = await selfsigned.generate([{ name: 'commonName', value: hostname }], {
    keySize: 2048,
    notAfterDate: new Date(Date.now() + 3650 * 86_400_000),
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: hostname }, { type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }, { type: 7, ip: '::1' }] }],
  });
  // Key first, each written aside and renamed, so a crash never leaves a cert without its key.
  await writeFile(`${keyPath}.tmp`, pems.private, { mode: 0o600 });
  await rename(`${keyPath}.tmp`, keyPath);
  await writeFile(`${certPath}.tmp`, pems.cert, { mode: 0o644 });
  await rename(`${certPath}.tmp`, certPath);
  return { key: Buffer.from(pems.private), cert: Buffer.from(pems.cert), created: true };
}

/**
 * Mozilla's server-side TLS profiles (version 5.7). "intermediate", the
 * default, is TLS 1.2 with forward-secret AEAD suites only (no static-RSA
 * key exchange, no CBC, no SHA-1 MACs) and TLS 1.3; "modern" is TLS 1.3
 * only. Clients pick the order (the profiles' honorCipherOrder off).
 */
export type TlsProfile = 'intermediate' | 'modern';

const INTERMEDIATE_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
  'DHE-RSA-AES128-GCM-SHA256',
  'DHE-RSA-AES256-GCM-SHA384',
  'DHE-RSA-CHACHA20-POLY1305',
].join(':');

/** The TLS settings a listener's sockets get (what its profile and tlsCiphers say). */
export interface TlsPolicy {
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3';
  readonly ciphers: string;
  readonly honorCipherOrder: boolean;
  readonly ecdhCurve: string;
}

export function tlsPolicy(profile: TlsProfile, ciphers?: string): TlsPolicy {
  return {
    minVersion: profile === 'modern' ? 'TLSv1.3' : 'TLSv1.2',
    // TLS 1.3's suites are all AEAD and stay as OpenSSL has them; this list is TLS 1.2's.
    ciphers: ciphers ?? INTERMEDIATE_CIPHERS,
    honorCipherOrder: false,
    ecdhCurve: 'X25519:prime256v1:secp384r1',
  };
}

/** Why OpenSSL refuses a cipher list, or undefined when it takes it. */
export function cipherListProblem(ciphers: string): string | undefined {
  try {
    tls.createSecureContext({ ciphers });
    return undefined;
  } catch (err) {
    return `OpenSSL knows no cipher in "${ciphers}" (${(err as Error).message})`;
  }
}
