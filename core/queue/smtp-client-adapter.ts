/**
 * The one place yubin reaches into nodemailer's SMTP client beyond its
 * documented API. nodemailer is pinned exactly (package.json) and
 * test/nodemailer-contract.test.ts fails, naming the member, if an upgrade
 * moves anything listed in NODEMAILER_INTERNALS.
 *
 * What nodemailer lacks upstream:
 * - No public list of the server's EHLO keywords. Remote delivery must know
 *   whether the next hop took a DSN request on (RFC 3461 5.2: then it, not
 *   we, sends the success notice): `_supportedExtensions`.
 * - Its typings (@types/nodemailer 8) lack `requireTLSExtensionEnabled`,
 *   the envelope flag that sends REQUIRETLS (RFC 8689) on MAIL.
 * - No access to the TLS socket after STARTTLS. DANE (RFC 7672) checks the
 *   certificate chain the server sent against its TLSA records itself,
 *   since Node verifies only against CAs: `_socket`.
 */
import type { TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';

/** The version this adapter was written against; package.json pins the same. */
export const NODEMAILER_VERSION = '10.6.1';

/** Everything of nodemailer's SMTPConnection this module relies on beyond its documented API. */
export const NODEMAILER_INTERNALS = {
  connection: {
    _supportedExtensions: 'Array', // the EHLO keywords nodemailer recognised, filled on connect
    _socket: 'object', // the socket: a TLSSocket once STARTTLS is done
  },
} as const;

/** EHLO keywords nodemailer records (it records no others). */
export type ServerExtension = 'DSN' | 'REQUIRETLS' | 'PIPELINING' | 'SMTPUTF8' | '8BITMIME' | 'SIZE';

/** Whether the connected server announced this keyword in its (last, post-STARTTLS) EHLO. */
export function serverSupports(conn: SMTPConnection, keyword: ServerExtension): boolean {
  const list = (conn as unknown as { _supportedExtensions?: unknown })._supportedExtensions;
  return Array.isArray(list) && list.includes(keyword);
}

/** nodemailer's envelope with the fields its typings lack. */
export type ClientEnvelope = SMTPConnection.Envelope & {
  size: number;
  /** Send REQUIRETLS on MAIL; nodemailer refuses (EREQUIRETLS) a server without TLS or without the keyword. */
  requireTLSExtensionEnabled?: boolean;
};

/**
 * The certificates the server sent, leaf first, once the session is
 * encrypted; undefined in clear text.
 */
export function peerChain(conn: SMTPConnection): X509Certificate[] | undefined {
  const socket = (conn as unknown as { _socket?: unknown })._socket;
  if (!conn.secure || !socket || typeof (socket as TLSSocket).getPeerCertificate !== 'function') return undefined;
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  // getPeerCertificate(true) links each certificate to its issuer; a self-signed one links to itself.
  for (let c = (socket as TLSSocket).getPeerCertificate(true); c?.raw && !seen.has(c.fingerprint256); c = c.issuerCertificate) {
    seen.add(c.fingerprint256);
    chain.push(new X509Certificate(c.raw));
  }
  return chain;
}
