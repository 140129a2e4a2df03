/**
 * Mail client autoconfiguration, without authentication: what a client needs
 * to set up an account on this server, from the site's own listeners.
 *
 * - Thunderbird (and others that read it): GET
 *   `/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=ADDRESS` and
 *   `/mail/config-v1.1.xml?emailaddress=ADDRESS` (the autoconfig.DOMAIN host),
 *   in the clientConfig 1.1 format.
 * - Outlook's "plain old XML" autodiscover: POST (GET with `?emailaddress=`
 *   for trying it by hand) `/autodiscover/autodiscover.xml`, the request an
 *   XML document with `<EMailAddress>`, the answer in the
 *   outlook/responseschema/2006a schema.
 *
 * Incoming: every pop3 listener a password can be given on (TLS, or
 * allowInsecureAuth). Outgoing: the SMTP listeners meant for submission
 * (requireAuth, implicit TLS, port 587 or 465, or a name saying so) among
 * those that can offer AUTH at all (TLS, or allowInsecureAuth); only when
 * there is none, any SMTP listener that can offer AUTH. Port 25 without AUTH
 * is never offered. TLS first: implicit, then STARTTLS, then plain. The port
 * is the configured one and the server name `config.hostname`.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { AnyListenerConfig, Config, ListenerConfig } from '../../core/index.js';

/** Largest autodiscover request body taken; Outlook's is a few hundred bytes. */
export const AUTODISCOVER_BODY_LIMIT = 16 * 1024;

const XML_TYPE = 'application/xml; charset=utf-8';
const OUTLOOK_SCHEMA = 'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a';
const AUTODISCOVER_SCHEMA = 'http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006';

export type SocketType = 'SSL' | 'STARTTLS' | 'plain';

/** One server a client is told about. */
export interface ClientServer {
  readonly protocol: 'pop3' | 'smtp';
  readonly listener: string;
  readonly hostname: string;
  readonly port: number;
  readonly socketType: SocketType;
}

// ---- Which listeners, in which order.

function socketType(l: ListenerConfig): SocketType {
  return l.tls === 'implicit' ? 'SSL' : l.tls === 'starttls' ? 'STARTTLS' : 'plain';
}

const TLS_RANK: Record<SocketType, number> = { SSL: 0, STARTTLS: 1, plain: 2 };

/** A password can be given on it: after TLS, or in clear where the listener allows that. */
function takesPassword(l: ListenerConfig): boolean {
  return l.tls !== 'none' || l.allowInsecureAuth;
}

/** An SMTP listener meant for mail clients rather than other MTAs. */
function looksLikeSubmission(l: ListenerConfig): boolean {
  return l.requireAuth || l.tls === 'implicit' || l.listen.port === 587 || l.listen.port === 465 || /submi|smtps|msa/i.test(l.name);
}

/** The servers to offer, incoming (pop3) then outgoing (smtp), TLS first within each. */
export function clientServers(config: Pick<Config, 'hostname' | 'listeners'>): ClientServer[] {
  const mail = config.listeners.filter((l: AnyListenerConfig): l is ListenerConfig => l.protocol !== 'http' && l.listen.port !== 0);
  const pop3 = mail.filter((l) => l.protocol === 'pop3' && takesPassword(l));
  const smtpAuth = mail.filter((l) => l.protocol === 'smtp' && takesPassword(l));
  const submission = smtpAuth.filter(looksLikeSubmission);
  const smtp = submission.length ? submission : smtpAuth;
  const servers = (protocol: 'pop3' | 'smtp', list: ListenerConfig[]): ClientServer[] =>
    list
      .map((l, i) => ({ i, server: { protocol, listener: l.name, hostname: config.hostname, port: l.listen.port, socketType: socketType(l) } }))
      .sort((a, b) => TLS_RANK[a.server.socketType] - TLS_RANK[b.server.socketType] || a.i - b.i)
      .map((x) => x.server);
  return [...servers('pop3', pop3), ...servers('smtp', smtp)];
}

// ---- Addresses and XML text.

const DOMAIN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/i;
/** Dot-atom local part (RFC 5322 atext), which is what a mailbox is set up with. */
const LOCAL = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/i;

/** `local@domain`, the domain in lower case; undefined for anything else. */
export function parseAddress(value: unknown): { address: string; domain: string } | undefined {
  if (typeof value !== 'string') return undefined;
  const v = value.trim();
  if (v.length > 254) return undefined;
  const at = v.lastIndexOf('@');
  if (at <= 0) return undefined;
  const local = v.slice(0, at);
  const domain = v.slice(at + 1).toLowerCase();
  if (local.length > 64 || !LOCAL.test(local) || domain.length > 253 || !DOMAIN.test(domain)) return undefined;
  return { address: `${local}@${domain}`, domain };
}

/** Text for an XML element or attribute: the five specials escaped, characters XML 1.0 cannot carry dropped. */
export function xmlEscape(value: string | number): string {
  return String(value)
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '')
    .replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

function xmlUnescape(text: string): string {
  return text.replace(/&(?:#x([0-9a-f]{1,6})|#([0-9]{1,7})|(amp|lt|gt|quot|apos));/gi, (whole, hex?: string, dec?: string, name?: string) => {
    if (name) return ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" } as Record<string, string>)[name.toLowerCase()] ?? whole;
    const code = hex ? parseInt(hex, 16) : Number(dec);
    return code <= 0x10ffff ? String.fromCodePoint(code) : whole;
  });
}

/** The text of the request's `<EMailAddress>` (with or without a namespace prefix), undefined when there is none. */
export function emailFromAutodiscover(body: string): string | undefined {
  const m = /<(?:[\w.-]+:)?EMailAddress(?:\s[^>]*)?>([^<]*)<\/(?:[\w.-]+:)?EMailAddress\s*>/i.exec(body);
  return m ? xmlUnescape(m[1]!).trim() : undefined;
}

// ---- The two documents.

export function thunderbirdConfig(config: Pick<Config, 'hostname' | 'listeners'>, address: { domain: string }): string {
  const e = xmlEscape;
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<clientConfig version="1.1">',
    `  <emailProvider id="${e(address.domain)}">`,
    `    <domain>${e(address.domain)}</domain>`,
    `    <displayName>${e(address.domain)} (${e(config.hostname)})</displayName>`,
    `    <displayShortName>${e(address.domain)}</displayShortName>`,
  ];
  for (const s of clientServers(config)) {
    const tag = s.protocol === 'pop3' ? 'incomingServer' : 'outgoingServer';
    lines.push(
      `    <${tag} type="${s.protocol}">`,
      `      <hostname>${e(s.hostname)}</hostname>`,
      `      <port>${e(s.port)}</port>`,
      `      <socketType>${e(s.socketType)}</socketType>`,
      '      <username>%EMAILADDRESS%</username>',
      '      <authentication>password-cleartext</authentication>',
      `    </${tag}>`,
    );
  }
  lines.push('  </emailProvider>', '</clientConfig>', '');
  return lines.join('\n');
}

export function outlookAutodiscover(config: Pick<Config, 'hostname' | 'listeners'>, address: { address: string }): string {
  const e = xmlEscape;
  const lines = [
    '<?xml version="1.0" encoding="utf-8"?>',
    `<Autodiscover xmlns="${AUTODISCOVER_SCHEMA}">`,
    `  <Response xmlns="${OUTLOOK_SCHEMA}">`,
    '    <Account>',
    '      <AccountType>email</AccountType>',
    '      <Action>settings</Action>',
  ];
  for (const s of clientServers(config)) {
    lines.push(
      '      <Protocol>',
      `        <Type>${s.protocol === 'pop3' ? 'POP3' : 'SMTP'}</Type>`,
      `        <Server>${e(s.hostname)}</Server>`,
      `        <Port>${e(s.port)}</Port>`,
      `        <LoginName>${e(address.address)}</LoginName>`,
      '        <DomainRequired>off</DomainRequired>',
      '        <SPA>off</SPA>',
      `        <SSL>${s.socketType === 'plain' ? 'off' : 'on'}</SSL>`,
    );
    if (s.socketType !== 'plain') lines.push(`        <Encryption>${s.socketType === 'SSL' ? 'SSL' : 'TLS'}</Encryption>`);
    lines.push(`        <AuthRequired>on</AuthRequired>`);
    if (s.protocol === 'smtp') lines.push('        <UsePOPAuth>off</UsePOPAuth>');
    lines.push('      </Protocol>');
  }
  lines.push('    </Account>', '  </Response>', '</Autodiscover>', '');
  return lines.join('\n');
}

// ---- Routes.

function badRequest(reply: FastifyReply, message: string): FastifyReply {
  return reply.code(400).type('text/plain; charset=utf-8').send(`${message}\n`);
}

const ADDRESS_PROBLEM = 'expected an email address (local@domain)';

/**
 * Adds the autoconfig and autodiscover routes, open to anyone. Call before
 * the instance is ready: the routes live in a scope of their own (its XML
 * body parser, body limit and error answers touch no other route).
 */
export function registerAutoconfig(app: FastifyInstance, config: Config): void {
  void app.register(async (scope) => {
    // Bodies as text, whatever another part of the app does with XML.
    for (const type of ['text/xml', 'application/xml']) {
      if (scope.hasContentTypeParser(type)) scope.removeContentTypeParser(type);
    }
    scope.addContentTypeParser(['text/xml', 'application/xml'], { parseAs: 'string', bodyLimit: AUTODISCOVER_BODY_LIMIT }, (_req, body, done) => done(null, body));
    scope.setErrorHandler((err: { statusCode?: number; message?: string }, _req, reply) => {
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
      const text = status < 500 ? String(err.message ?? 'bad request').split('\n')[0] : 'internal error';
      return reply.code(status).type('text/plain; charset=utf-8').send(`${text}\n`);
    });

    const thunderbird = async (req: { query: unknown }, reply: FastifyReply) => {
      const q = req.query as Record<string, unknown>;
      const address = parseAddress(q.emailaddress);
      if (!address) return badRequest(reply, `emailaddress: ${ADDRESS_PROBLEM}`);
      return reply.type(XML_TYPE).header('cache-control', 'no-cache').send(thunderbirdConfig(config, address));
    };
    for (const url of ['/.well-known/autoconfig/mail/config-v1.1.xml', '/mail/config-v1.1.xml']) scope.get(url, thunderbird);

    const outlook = async (req: { query: unknown; body: unknown; method: string }, reply: FastifyReply) => {
      let given: unknown;
      if (req.method === 'GET') {
        given = (req.query as Record<string, unknown>).emailaddress;
      } else {
        if (typeof req.body !== 'string') return badRequest(reply, 'expected an XML request (Content-Type text/xml or application/xml)');
        given = emailFromAutodiscover(req.body);
        if (given === undefined) return badRequest(reply, 'no <EMailAddress> in the request');
      }
      const address = parseAddress(given);
      if (!address) return badRequest(reply, `EMailAddress: ${ADDRESS_PROBLEM}`);
      return reply.type(XML_TYPE).header('cache-control', 'no-cache').send(outlookAutodiscover(config, address));
    };
    for (const url of ['/autodiscover/autodiscover.xml', '/Autodiscover/Autodiscover.xml', '/AutoDiscover/AutoDiscover.xml']) {
      scope.get(url, outlook);
      scope.post(url, { bodyLimit: AUTODISCOVER_BODY_LIMIT }, outlook);
    }
  });
}
