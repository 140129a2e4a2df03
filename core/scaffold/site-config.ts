/**
 * The yubin.yaml that `yubin init` writes: the production layout of
 * config/examples/yubin.production.yaml (ports 25, 587, 465, 110, 995, the
 * qmail + ucspi-tcp + spamdyke order of checks), or the same on 127.0.0.1 and
 * unprivileged ports with --loopback, so it runs as a normal user as is.
 * Kept as strings here, not as files beside the code, so it ships inside dist/.
 */

/**
 * IPv6 listeners on [::] beside the IPv4 ones (the server binds those
 * IPv6-only, so both can have port 25 on any system), or none (loopback mode).
 */
export type Ipv6Listeners = 'separate' | 'none';

export interface SiteConfigOptions {
  readonly loopback: boolean;
  readonly ipv6: Ipv6Listeners;
}

interface ListenerTemplate {
  readonly name: string;
  readonly comment: string;
  readonly protocol: 'smtp' | 'pop3';
  readonly port: number;
  readonly loopbackPort: number;
  readonly body: string;
}

const MX_PLUGINS = 'plugins: [tcprules, whitelist, badmailfrom, rcpthosts, rblsmtpd, spamdyke, vpopmail, mailauth]';

const LISTENERS: readonly ListenerTemplate[] = [
  {
    name: 'mx',
    comment: `Mail from the world to our domains (qmail-smtpd under tcpserver on port 25).
The plugins run in this order for each hook, like the seed guide's chain:
tcpserver rules, whitelist, badmailfrom, rcpthosts, rblsmtpd, spamdyke,
then vpopmail (unknown users 550 at RCPT) and mailauth (SPF/DKIM/DMARC).
With spamd and clamd running, add clamav and spamassassin before mailauth.`,
    protocol: 'smtp',
    port: 25,
    loopbackPort: 2525,
    body: `tls: starttls                 # STARTTLS offered (a self-signed pair in var/tls unless cert/key are given)
# cert: /etc/ssl/yubin/fullchain.pem
# key: /etc/ssl/yubin/privkey.pem
limits:
  maxMessageSize: 25M         # qmail's databytes; advertised with SIZE, enforced with 552
  maxRecipients: 100
  maxConnections: 200         # tcpserver -c
  maxConnectionsPerIp: 20     # the limits patch's MAXCONNIP; tcp.smtp can set it per client
${MX_PLUGINS}`,
  },
  {
    name: 'submission',
    comment: `Submission from our users (RFC 6409): AUTH (vchkpw, from vpopmail) is
offered only after STARTTLS and required before MAIL; an authenticated
user may relay, from their own address or an alias.`,
    protocol: 'smtp',
    port: 587,
    loopbackPort: 2587,
    body: `tls: starttls
requireAuth: true
limits:
  maxRecipients: 500
  maxAuthFailures: 3
plugins: [tcprules, vpopmail, mailauth]`,
  },
  {
    name: 'submissions',
    comment: `Submission over implicit TLS (RFC 8314), what sslserver or stunnel did
in front of qmail-smtpd on port 465.`,
    protocol: 'smtp',
    port: 465,
    loopbackPort: 2465,
    body: `tls: implicit
requireAuth: true
plugins: [tcprules, vpopmail, mailauth]`,
  },
  {
    name: 'pop3',
    comment: `POP3 (qmail-popup + vchkpw + qmail-pop3d): passwords only after STLS.`,
    protocol: 'pop3',
    port: 110,
    loopbackPort: 2110,
    body: `tls: starttls
limits:
  idleTimeout: 10m
plugins: [tcprules, vpopmail]`,
  },
  {
    name: 'pop3s',
    comment: `POP3 over implicit TLS.`,
    protocol: 'pop3',
    port: 995,
    loopbackPort: 2995,
    body: `tls: implicit
limits:
  idleTimeout: 10m
plugins: [tcprules, vpopmail]`,
  },
];

const indent = (text: string, prefix: string): string =>
  text
    .split('\n')
    .map((l) => (l ? prefix + l : l))
    .join('\n');

function listener(l: ListenerTemplate, name: string, listen: string, comment: string): string {
  return [indent(comment, '  # '), `  - name: ${name}`, `    protocol: ${l.protocol}`, `    listen: "${listen}"`, indent(l.body, '    ')].join('\n');
}

function listeners(o: SiteConfigOptions): string {
  const out: string[] = [];
  for (const l of LISTENERS) {
    if (o.loopback) {
      out.push(listener(l, l.name, `127.0.0.1:${l.loopbackPort}`, `${l.comment}\nPort ${l.port}'s role on ${l.loopbackPort}, loopback only.`));
      continue;
    }
    out.push(listener(l, l.name, `0.0.0.0:${l.port}`, l.comment));
    if (o.ipv6 === 'none') continue;
    out.push(listener(l, `${l.name}6`, `[::]:${l.port}`, 'The same on IPv6 (IPv6 only: IPv4 stays with the listener above).'));
  }
  return out.join('\n\n');
}

/** The whole yubin.yaml for a new site. */
export function siteConfig(o: SiteConfigOptions): string {
  const intro = o.loopback
    ? `# This site listens on 127.0.0.1 only, on unprivileged ports (2525 for 25,
# 2587 for 587, 2465 for 465, 2110 for 110, 2995 for 995), so it runs as a
# normal user with nothing else set up. \`yubin init DIR\` without --loopback
# writes the same on the standard ports and all addresses.`
    : `# Production layout: SMTP on 25, submission on 587 and 465, POP3 on 110 and
# 995, on every IPv4 address (and IPv6, see the listeners). Binding ports
# below 1024 needs root or CAP_NET_BIND_SERVICE; run it under a dedicated
# user that owns var/ (qmaild/vpopmail's role).`;
  return `# yubin: what a qmail + ucspi-tcp + vpopmail + spamdyke box did, in one
# program. Written by \`yubin init\`; check it after every change with
#
#     yubin check-config -c yubin.yaml
#
# and start it with \`yubin serve DIR\` (or \`-c yubin.yaml\`). SIGHUP re-reads this file
# and the rule files; SIGTERM finishes what is in progress and exits.
#
${intro}
#
# Relative paths are resolved against this file's directory.

# The name in the greeting, HELO replies and Received headers (qmail's
# control/me). Default: the machine's host name.
# hostname: mail.example.com

# Queue, mailboxes, the vpopmail database, generated TLS keys, plugin state.
# One file system: messages are renamed into place, never copied.
dataDir: ./var

# Domains delivered here besides vpopmail's (qmail's control/locals).
# Virtual domains are added at run time: \`yubin domain add example.com -c yubin.yaml\`.
localDomains: [localhost]

# fatal, error, warn, info (one line per connection and per decision), debug.
logLevel: info

# One options block per plugin, keyed as the listeners below name it. A
# listener's list may give options for that listener only, merged over these:
#   plugins: [tcprules, whitelist, { rblsmtpd: { permanent: true } }]
plugins:
  # tcpserver's access rules (tcp.smtp in text form; no cdb to rebuild,
  # the file is re-read when it changes). 127.0.0.1 may relay, like the seed.
  tcprules:
    file: tcp.smtp

  # Clients the anti-spam plugins leave alone: IPs, CIDR blocks and prefixes
  # in a file, and/or one empty file per IP in a directory
  # (the seed guide's /var/qmail/whitelist/IP: \`touch whitelist/192.0.2.7\`).
  whitelist:
    file: whitelist.txt
    dir: whitelist

  # Envelope senders refused at RCPT (qmail's control/badmailfrom).
  badmailfrom:
    file: badmailfrom

  # Domains taken besides the local and virtual ones, e.g. as backup MX
  # (qmail's control/rcpthosts). Relaying needs RELAYCLIENT or AUTH.
  rcpthosts:
    file: rcpthosts

  # rblsmtpd: DNSBLs asked at connect, answered at RCPT (451 with the zone's
  # text). tcp.smtp's RBLSMTPD="" skips it for a client. Spamhaus refuses
  # queries that come through public resolvers: use a local one (dns below).
  rblsmtpd:
    zones:
      - zen.spamhaus.org
    failClosed: false

  # spamdyke: rDNS checks, S25R with taRgrey (suspicious names are greylisted
  # rather than refused), greylisting off until you want it.
  spamdyke:
    rejectEmptyRdns: true
    rejectUnresolvableRdns: true
    s25r:
      enabled: true
    taRgrey:
      enabled: true
    graylist:
      enabled: false
    maxRecipients: 50

  # Virtual domains and users (vpopmail, vchkpw, vdelivermail):
  # \`yubin domain add\`, \`yubin user add\`. Store in var/vpopmail.sqlite,
  # mailboxes in var/domains/DOMAIN/USER/Maildir.
  vpopmail:
    overQuotaAtRcpt: defer       # a full mailbox: 452 4.2.2 at RCPT
    senderMustMatchLogin: true   # submission: MAIL FROM is the user's own or an alias

  # Local delivery for localDomains that are not vpopmail domains:
  # var/mail/DOMAIN/USER/Maildir.
  maildir:
    root: mail

  # SPF, DKIM, DMARC and ARC checks (Authentication-Results). To DKIM-sign
  # your users' mail: \`yubin dkim keygen example.com -c yubin.yaml\`, then
  #   sign:
  #     example.com: { selector: default }
  mailauth:
    enforceDmarc: false

  # Content filters, for the mx listener once the daemons run:
  # spamassassin: { port: 783, rejectScore: 15 }
  # clamav: { port: 3310 }

  # A plugin of your own: an ESM file in plugins/ (see plugins/README.md),
  # named by its path in a listener's list and keyed by that path here:
  # ./plugins/my-check.js: { domain: example.com }
  #
  # A plugin from npm: \`npm install yubin-plugin-NAME\` in this directory
  # (package.json here lets it find yubin-mail), then list yubin-plugin-NAME
  # in a listener and give its options here:
  # yubin-plugin-NAME: { tag: mx }

# Plugin state between connections (greylisting): SQLite in var/, or Redis
# shared by several MX hosts.
store:
  backend: sqlite
  # backend: redis
  # url: redis://127.0.0.1:6379/0

# Resolvers for MX lookups and the DNSBL plugins. Empty: /etc/resolv.conf.
# A local caching resolver (unbound, dnscache) is best.
dns:
  servers: []
  timeout: 5s

# qmail-send's settings.
queue:
  concurrencyLocal: 10        # concurrencylocal
  concurrencyRemote: 20       # concurrencyremote
  lifetime: 7d                # queuelifetime: then a last try, then a bounce
  # doubleBounceTo: postmaster@example.com

# Where accepted mail goes: vacation replies first, vpopmail's domains through vpopmail (quotas,
# aliases, catch-alls), other local domains to maildir, the rest over SMTP
# to each domain's MX (or through a smarthost).
delivery:
  plugins: [autorespond, vpopmail, maildir]   # autorespond: the users' vacation replies
  # smarthost: { host: smtp.provider.example, port: 587, tls: starttls, user: u, password: p }

listeners:
${listeners(o)}

  # Web account management (http://127.0.0.1:2080/: \`yubin admin add ADDRESS\`
  # makes a server admin; postmaster@DOMAIN runs DOMAIN; users set their
  # password, forwarding and vacation) and Prometheus metrics (/metrics).
  # Plain HTTP, so loopback only; to serve the pages to the world add a
  # listener with tls: implicit on 443 and serve: [webadmin].
  - name: http
    protocol: http
    listen: "127.0.0.1:2080"
    serve: [metrics, webadmin]
`;
}
