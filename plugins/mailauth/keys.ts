/** DKIM keys on disk and the DNS record that publishes each. */
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

export function keyPath(dir: string, domain: string, selector: string): string {
  return path.join(dir, `${domain}.${selector}.key`);
}

/** `selector._domainkey.domain. IN TXT "v=DKIM1; k=rsa; p=..."`, split in 255-octet strings as DNS wants. */
export function dkimRecord(domain: string, selector: string, privateKeyPem: string): { name: string; value: string; zoneLine: string } {
  const der = createPublicKey(privateKeyPem).export({ type: 'spki', format: 'der' });
  const value = `v=DKIM1; k=rsa; p=${der.toString('base64')}`;
  const name = `${selector}._domainkey.${domain}`;
  const chunks = value.match(/.{1,255}/g) ?? [value];
  return { name, value, zoneLine: `${name}. IN TXT ( ${chunks.map((c) => `"${c}"`).join(' ')} )` };
}

/** A new 2048-bit RSA key, written 0600 (refusing to overwrite one). */
export async function generateKey(dir: string, domain: string, selector: string): Promise<{ file: string; pem: string }> {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = keyPath(dir, domain, selector);
  await writeFile(file, pem, { mode: 0o600, flag: 'wx' });
  return { file, pem };
}
