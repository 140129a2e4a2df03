/**
 * Certificates for listeners with TLS. A listener that names no certificate
 * gets a self-signed one, generated once into dataDir/tls, so STARTTLS works
 * out of the box; production configs name a real one.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as selfsigned from 'selfsigned';

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
