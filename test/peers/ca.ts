/**
 * A private certificate authority for tests of verified TLS: a CA and leaf
 * certificates for the names a test needs, made with the openssl command
 * (P-256 keys, valid two days). Node trusts the CA only where a test hands
 * it over (delivery.caFile, https `ca`).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { run } from '../helpers.js';

export interface TestCa {
  /** The CA certificate's PEM file. */
  readonly caFile: string;
  readonly caPem: Buffer;
  /** A key pair for these DNS names, signed by the CA. */
  issue(names: readonly string[]): Promise<{ key: Buffer; cert: Buffer }>;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const r = await run('openssl', args, { cwd: dir });
  if (r.code !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export async function makeCa(dir: string): Promise<TestCa> {
  await openssl(dir, ['req', '-x509', ...EC, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=yubin test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  let serial = 0;
  return {
    caFile: path.join(dir, 'ca.pem'),
    caPem: readFileSync(path.join(dir, 'ca.pem')),
    async issue(names) {
      const n = `leaf${++serial}`;
      writeFileSync(path.join(dir, `${n}.ext`), `subjectAltName=${names.map((x) => `DNS:${x}`).join(',')}\n`);
      await openssl(dir, ['req', ...EC, '-keyout', `${n}.key`, '-out', `${n}.csr`, '-subj', `/CN=${names[0]}`]);
      await openssl(dir, ['x509', '-req', '-in', `${n}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', String(serial + 1000), '-out', `${n}.pem`, '-days', '2', '-extfile', `${n}.ext`]);
      return { key: readFileSync(path.join(dir, `${n}.key`)), cert: readFileSync(path.join(dir, `${n}.pem`)) };
    },
  };
}
