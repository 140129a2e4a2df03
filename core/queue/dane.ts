/**
 * DANE for SMTP (RFC 7672): an MX host whose TLSA records are published in
 * DNSSEC-signed DNS must be reached over STARTTLS with a certificate those
 * records name; a mismatch defers the mail (4.7.5, as Postfix's "dane"
 * level does) instead of sending it to whoever answered.
 *
 * Per MX host, with the trusted resolver's AD bit deciding what is secure:
 * - its address records are insecure, or its TLSA records are insecure or
 *   securely absent: DANE does not apply (opportunistic TLS, or MTA-STS);
 * - secure TLSA records, some usable: authenticate the server with them;
 * - secure TLSA records, none usable: TLS is required, but not verified;
 * - a lookup that fails (SERVFAIL, which is also how a validating resolver
 *   answers bogus data, or a timeout): this host is not used now.
 *
 * Usable means DANE-TA(2) or DANE-EE(3), selector Cert(0) or SPKI(1), and
 * matching Full(0), SHA2-256(1) or SHA2-512(2) with a digest of the right
 * length; PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP (RFC 7672 3.1.3).
 * A DANE-EE match is all there is to it: no name or date checks (3.1.1).
 * DANE-TA needs a chain from the leaf up to the matching certificate that
 * verifies, the leaf in its validity period, and a name on it that is the
 * MX host or the name it is a CNAME for (3.2.2; an insecure MX RRset gives
 * no other reference identifier, and the domain's own name is not used).
 */
import { X509Certificate, createHash } from 'node:crypto';
import type { SecureDns, Tlsa } from '../services/secure-dns.js';

export type DaneLookup =
  /** DANE does not apply to this host. */
  | { readonly kind: 'none'; readonly why: string }
  /** Authenticate the server with these records; `names` are what a DANE-TA certificate may be for. */
  | { readonly kind: 'dane'; readonly records: readonly Tlsa[]; readonly names: readonly string[] }
  /** Secure TLSA records, none usable: STARTTLS required, the certificate not checked. */
  | { readonly kind: 'encrypt' }
  /** Cannot tell now: the host must not be used. */
  | { readonly kind: 'failed'; readonly error: string };

const DIGEST_LENGTH: Record<number, number> = { 1: 32, 2: 64 };

export function usableTlsa(r: Tlsa): boolean {
  if (r.usage !== 2 && r.usage !== 3) return false;
  if (r.selector !== 0 && r.selector !== 1) return false;
  if (r.matchingType === 0) return r.data.length > 0;
  return DIGEST_LENGTH[r.matchingType] === r.data.length;
}

/** The TLSA base name of an SMTP server (RFC 6698 3). */
export function tlsaName(host: string, port: number): string {
  return `_${port}._tcp.${host.toLowerCase().replace(/\.$/, '')}`;
}

export class Dane {
  constructor(private readonly resolver: () => SecureDns) {}

  async lookup(host: string, port: number): Promise<DaneLookup> {
    const dns = this.resolver();
    const addresses = await dns.addresses(host);
    if (addresses.kind === 'failed') return { kind: 'failed', error: `address lookup of ${host} failed: ${addresses.error}` };
    // RFC 7672 2.2.2: TLSA records are only looked for under a host whose addresses are secure.
    if (!addresses.secure) return { kind: 'none', why: `the addresses of ${host} are not DNSSEC-signed` };
    const name = host.toLowerCase().replace(/\.$/, '');
    // RFC 7672 2.2.2: an MX host that is a (secure) CNAME: the TLSA records of the name it expands to first, then its own.
    const bases = addresses.kind === 'found' && addresses.owner !== name ? [addresses.owner, name] : [name];
    for (const [i, base] of bases.entries()) {
      const tlsa = await dns.tlsa(tlsaName(base, port));
      if (tlsa.kind === 'failed') return { kind: 'failed', error: `TLSA lookup of ${tlsaName(base, port)} failed: ${tlsa.error}` };
      if (!tlsa.secure) return { kind: 'none', why: `the TLSA records of ${base} are not DNSSEC-signed` };
      if (tlsa.kind === 'none') {
        if (i < bases.length - 1) continue;
        return { kind: 'none', why: `${host} has no TLSA records` };
      }
      const records = tlsa.records.filter(usableTlsa);
      return records.length ? { kind: 'dane', records, names: bases } : { kind: 'encrypt' };
    }
    return { kind: 'none', why: `${host} has no TLSA records` };
  }
}

function associated(cert: X509Certificate, selector: number): Buffer {
  return selector === 0 ? cert.raw : cert.publicKey.export({ type: 'spki', format: 'der' });
}

function matches(r: Tlsa, cert: X509Certificate): boolean {
  const data = associated(cert, r.selector);
  const digest = r.matchingType === 0 ? data : createHash(r.matchingType === 1 ? 'sha256' : 'sha512').update(data).digest();
  return digest.equals(r.data);
}

/**
 * Whether the server's chain (leaf first, as it sent it) satisfies the
 * records, for this MX host at this time.
 */
export function checkChain(records: readonly Tlsa[], chain: readonly X509Certificate[], names: readonly string[], now: number): { ok: true; how: string } | { ok: false; why: string } {
  const leaf = chain[0];
  if (!leaf) return { ok: false, why: 'the server sent no certificate' };
  for (const r of records.filter((x) => x.usage === 3)) {
    if (matches(r, leaf)) return { ok: true, how: `DANE-EE ${r.usage} ${r.selector} ${r.matchingType}` };
  }
  let why = 'no TLSA record matches the certificate';
  for (const r of records.filter((x) => x.usage === 2)) {
    const at = chain.findIndex((c, i) => i > 0 && matches(r, c));
    if (at < 0) continue;
    const broken = chain.slice(0, at).findIndex((c, i) => !c.checkIssued(chain[i + 1]!) || !c.verify(chain[i + 1]!.publicKey));
    if (broken >= 0) {
      why = `the chain to the DANE-TA certificate does not verify at ${chain[broken]!.subject.replace(/\n/g, ', ')}`;
      continue;
    }
    if (now < Date.parse(leaf.validFrom) || now > Date.parse(leaf.validTo)) {
      why = `the certificate is not valid now (${leaf.validFrom} to ${leaf.validTo})`;
      continue;
    }
    if (!names.some((n) => leaf.checkHost(n.replace(/\.$/, '')))) {
      why = `the certificate (DANE-TA) is not for ${names.join(' or ')}`;
      continue;
    }
    return { ok: true, how: `DANE-TA ${r.usage} ${r.selector} ${r.matchingType}` };
  }
  return { ok: false, why };
}
