/**
 * Remote delivery, qmail-remote's job: find the destination (MX through the
 * core DNS service, or a route's relay or the smarthost), connect host by host until
 * one answers, and send one message to every recipient of that domain in one
 * transaction. Each recipient comes back delivered, temporary (retry) or
 * permanent (bounce), with the remote server's reply for the bounce.
 */
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { DeliveryConfig, RouteConfig } from '../config/schema.js';
import type { Dns, MxRecord } from '../services/dns.js';
import type { RecipientDsn } from './dsn.js';
import { domainKeys } from './domain-keys.js';
import { peerChain, serverSupports, type ClientEnvelope } from './smtp-client-adapter.js';
import { checkChain, type Dane, type DaneLookup } from './dane.js';
import { rset, type CachedSession, type ConnectionCache } from './connection-cache.js';
import { mxMatches, type MtaSts } from './mta-sts.js';
import { classifyTlsFailure, type ReportedPolicy, type TlsaPolicy, type TlsReports, type TlsSessionResult } from './tls-report.js';

export type RemoteOutcome =
  /** `relayed`: the next hop was an SMTP server; `dsn` true when it took the DSN request on (so it reports success itself). */
  | { readonly kind: 'delivered'; readonly text: string; readonly relayed?: { readonly dsn: boolean } }
  | { readonly kind: 'temporary' | 'permanent'; readonly text: string; readonly status: string; readonly remoteMta?: string; readonly diagnostic?: string };

export interface RemoteJob {
  readonly domain: string;
  readonly sender: string;
  readonly recipients: readonly string[];
  readonly size: number;
  readonly message: () => Promise<Readable>;
  /** The sender's DSN request (RFC 3461), passed on to a next hop that speaks DSN. */
  readonly dsn?: { readonly ret?: string; readonly envid?: string; readonly recipient: (address: string) => RecipientDsn };
  /** REQUIRETLS (RFC 8689): only over STARTTLS with a verified certificate, to a server announcing REQUIRETLS. */
  readonly requireTls?: boolean;
  /** BODY=BINARYMIME (RFC 3030): binary content, which DATA cannot carry. */
  readonly binary?: boolean;
  /** `TLS-Required: No` (RFC 8689 5): the domain's MTA-STS policy and DANE records are not applied. */
  readonly tlsOptional?: boolean;
}

export interface RemoteDeps {
  readonly dns: Dns;
  readonly config: DeliveryConfig;
  readonly heloName: string;
  /** Our own listening sockets: an MX pointing back at one of them is a loop. */
  readonly isOwnSocket: (ip: string, port: number) => boolean;
  /** Sessions kept for the next message to the same destination; without it each delivery has its own. */
  readonly cache?: ConnectionCache;
  /** MTA-STS policies of destination domains; without it none is looked up. */
  readonly mtaSts?: MtaSts;
  /** Extra trusted certificates (PEM) for servers whose certificate is verified. */
  readonly ca?: Buffer;
  /** Where sessions to domains with an MTA-STS policy are counted for TLS-RPT. */
  readonly tlsReports?: Pick<TlsReports, 'record'>;
  /** TLSA records of MX hosts (DANE); without it none are looked up. */
  readonly dane?: Dane;
}

interface Target {
  readonly name: string;
  readonly ips: readonly string[];
}

type Outcomes = Map<string, RemoteOutcome>;

function all(recipients: readonly string[], outcome: RemoteOutcome): Outcomes {
  return new Map(recipients.map((r) => [r, outcome]));
}

const temporary = (status: string, text: string, extra: Partial<RemoteOutcome> = {}): RemoteOutcome => ({ kind: 'temporary', status, text, ...extra }) as RemoteOutcome;
const permanent = (status: string, text: string, extra: Partial<RemoteOutcome> = {}): RemoteOutcome => ({ kind: 'permanent', status, text, ...extra }) as RemoteOutcome;

/** The enhanced code in a reply, or one made from its basic code. */
export function statusOf(reply: string, code: number): string {
  const m = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply);
  if (m) return m[1]!;
  return code >= 500 ? '5.0.0' : '4.0.0';
}

/** Equal preferences in random order (RFC 5321 5.1), lower preference first. */
function orderMx(records: readonly MxRecord[]): MxRecord[] {
  return [...records].map((r) => ({ r, k: Math.random() })).sort((a, b) => a.r.priority - b.r.priority || a.k - b.k).map((x) => x.r);
}

async function addressesOf(dns: Dns, name: string): Promise<{ ips: string[]; failed?: string }> {
  if (isIP(name)) return { ips: [name] };
  const [a, aaaa] = await Promise.all([dns.a(name), dns.aaaa(name)]);
  const ips = [...(a.kind === 'found' ? a.records : []), ...(aaaa.kind === 'found' ? aaaa.records : [])];
  const failed = [a, aaaa].find((r) => r.kind === 'failed');
  return { ips, failed: failed && failed.kind === 'failed' ? failed.error : undefined };
}

/** A relay as the connection needs it: a route's, or the smarthost (whose TLS is never merely opportunistic). */
type Relay = Pick<RouteConfig, 'host' | 'port' | 'tls' | 'user' | 'password' | 'verifyCertificate'> & { readonly what: string };

/**
 * The relay for a domain, or undefined for its MX: the route of the domain
 * itself, then of `.parent` keys from the nearest up (qmail-remote's order),
 * then the smarthost. A route with host "" means the MX, whatever follows.
 */
export function relayFor(domain: string, config: DeliveryConfig): Relay | undefined {
  for (const key of domainKeys(domain)) {
    const route = config.routes[key];
    if (route) return route.host === '' ? undefined : { ...route, what: `the route for ${key}, ${route.host}` };
  }
  return config.smarthost && { ...config.smarthost, what: `the smarthost ${config.smarthost.host}` };
}

/** Where to connect for a domain, or the outcome that ends the attempt (no such domain, null MX, DNS trouble). */
async function targets(domain: string, relay: Relay | undefined, deps: RemoteDeps): Promise<Target[] | RemoteOutcome> {
  const { dns } = deps;
  if (relay) {
    const { ips, failed } = await addressesOf(dns, relay.host);
    if (!ips.length) return temporary('4.4.3', `Cannot resolve ${relay.what}${failed ? `: ${failed}` : ''}`);
    return [{ name: relay.host, ips }];
  }
  const mx = await dns.mx(domain);
  if (mx.kind === 'failed') return temporary('4.4.3', `DNS lookup of the MX of ${domain} failed: ${mx.error}`);
  if (mx.kind === 'none' && mx.reason === 'nxdomain') return permanent('5.1.2', `Sorry, I couldn't find any host named ${domain}. (#5.1.2)`);
  let records: MxRecord[];
  if (mx.kind === 'none') {
    records = [{ exchange: domain, priority: 0 }]; // no MX: the domain's own address (RFC 5321 5.1)
  } else {
    // RFC 7505: a single MX of "." says the domain takes no mail at all.
    if (mx.records.some((r) => r.exchange === '' || r.exchange === '.')) return permanent('5.1.10', `Sorry, ${domain} does not accept mail (null MX). (#5.1.10)`);
    records = orderMx(mx.records);
  }
  const out: Target[] = [];
  let dnsError: string | undefined;
  for (const r of records) {
    const { ips, failed } = await addressesOf(dns, r.exchange);
    if (failed) dnsError = failed;
    if (ips.length) out.push({ name: r.exchange, ips });
  }
  if (!out.length) {
    if (dnsError) return temporary('4.4.3', `DNS lookup of the MX hosts of ${domain} failed: ${dnsError}`);
    return permanent('5.4.4', `Sorry, the MX hosts of ${domain} have no address. (#5.4.4)`);
  }
  return out;
}

type SmtpError = Error & { responseCode?: number; response?: string; code?: string; rejectedErrors?: SmtpError[]; recipient?: string };

function openConnection(options: SMTPConnection.Options): Promise<SMTPConnection> {
  return new Promise((resolve, reject) => {
    const conn = new SMTPConnection(options);
    const onError = (err: Error) => {
      conn.close();
      reject(err);
    };
    conn.once('error', onError);
    conn.connect(() => {
      conn.removeListener('error', onError);
      // Later errors reach the send callback; an unheard 'error' event would crash the process.
      conn.on('error', () => undefined);
      resolve(conn);
    });
  });
}

function login(conn: SMTPConnection, user: string, pass: string): Promise<void> {
  return new Promise((resolve, reject) => conn.login({ user, pass }, (err) => (err ? reject(err) : resolve())));
}

function send(conn: SMTPConnection, envelope: ClientEnvelope, message: Readable): Promise<SMTPConnection.SentMessageInfo> {
  return new Promise((resolve, reject) => conn.send(envelope, message, (err, info) => (err ? reject(err) : resolve(info))));
}

/** What one connected server said about each recipient of a transaction. */
function fromTransaction(job: Pick<RemoteJob, 'recipients'>, host: string, info: SMTPConnection.SentMessageInfo | undefined, err: SmtpError | undefined, dsn = false): Outcomes {
  const out: Outcomes = new Map();
  const remoteMta = host;
  const rejected = new Map<string, SmtpError>();
  for (const e of (err?.rejectedErrors ?? (info as { rejectedErrors?: SmtpError[] } | undefined)?.rejectedErrors ?? []) as SmtpError[]) {
    if (e.recipient) rejected.set(e.recipient, e);
  }
  for (const rcpt of job.recipients) {
    const e = rejected.get(rcpt) ?? (err && !err.rejectedErrors ? err : undefined);
    if (!e) {
      out.set(rcpt, err ? temporary('4.4.2', `${host} gave no answer for this recipient: ${err.message}`) : { kind: 'delivered', text: `${host} said: ${(info?.response ?? '250').trim()}`, relayed: { dsn } });
      continue;
    }
    const reply = (e.response ?? e.message).trim();
    // The remote's SIZE says it will never take this message: as final as a 552.
    const code = e.responseCode ?? (/larger than allowed/.test(e.message) ? 552 : undefined);
    const text = `Remote host ${host} said: ${reply}`;
    if (code && code >= 500) out.set(rcpt, permanent(e.responseCode ? statusOf(reply, code) : '5.3.4', text, { remoteMta, diagnostic: reply }));
    else out.set(rcpt, temporary(code ? statusOf(reply, code) : '4.4.2', code ? text : `Connection to ${host} failed during the transaction: ${e.message}`, { remoteMta, diagnostic: code ? reply : undefined }));
  }
  return out;
}

/**
 * Recipients that go in one transaction: those with the same NOTIFY and
 * ORCPT, since nodemailer gives one DSN request per envelope. Without DSN
 * (nearly all mail) that is every recipient at once, as before.
 */
function transactions(job: RemoteJob): Array<{ recipients: string[]; dsn?: RecipientDsn }> {
  if (!job.dsn) return [{ recipients: [...job.recipients] }];
  const groups = new Map<string, { recipients: string[]; dsn: RecipientDsn }>();
  for (const rcpt of job.recipients) {
    const dsn = job.dsn.recipient(rcpt);
    const key = JSON.stringify([dsn.notify ?? null, dsn.orcpt ?? null]);
    const group = groups.get(key);
    if (group) group.recipients.push(rcpt);
    else groups.set(key, { recipients: [rcpt], dsn });
  }
  return [...groups.values()];
}

/** A failure to secure the session the way REQUIRETLS demands (as opposed to a host that is down). */
function isTlsRefusal(err: SmtpError): boolean {
  return err.code === 'ETLS' || err.code === 'EREQUIRETLS' || /certificate|self.signed|altnames|TLS/i.test(err.message);
}

const REQUIRETLS_FAILED = (domain: string, why: string) =>
  permanent('5.7.10', `Sorry, the message requires TLS (REQUIRETLS) and no server of ${domain} offered a verified TLS session with REQUIRETLS: ${why} (#5.7.10)`);

/** What a cached session is good for: this destination, reached this way, with this security. */
function cacheKey(job: RemoteJob, smart: Relay | undefined, port: number): string {
  const where = smart ? `relay ${smart.host}:${port} ${smart.tls} ${smart.user ?? ''}` : `mx ${job.domain.toLowerCase()}:${port}`;
  return job.requireTls ? `${where} requiretls` : where;
}

/** RFC 8461 5: a policy in enforce mode that no MX satisfies defers the message (and it bounces only at the end of its lifetime). */
const STS_FAILED = (domain: string, why: string) => temporary('4.7.5', `MTA-STS policy of ${domain} (enforce) not met: ${why}`);

/** RFC 7672 2.2: an MX host with secure TLSA records that no session satisfied: deferred, as Postfix does. */
const DANE_FAILED = (domain: string, why: string) => temporary('4.7.5', `DANE TLSA authentication for ${domain} failed: ${why}`);

/** How one session is secured: `strict` verified by CAs, `dane` STARTTLS checked here against TLSA records, `usual` as configured. */
type Security = 'strict' | 'dane' | 'usual';

export async function deliverRemote(job: RemoteJob, deps: RemoteDeps): Promise<Outcomes> {
  const { config, cache } = deps;
  // RFC 3030 3: a relay that cannot pass binary on converts or returns the message; nodemailer sends with DATA only.
  if (job.binary) return all(job.recipients, permanent('5.6.3', `Sorry, this message was sent with BODY=BINARYMIME and can only be delivered here: I send onward with DATA, which cannot carry binary content. (#5.6.3)`));
  const smart = relayFor(job.domain, config);
  const found = await targets(job.domain, smart, deps);
  if (!Array.isArray(found)) return all(job.recipients, found);
  if (job.requireTls && smart && (smart.tls === 'none' || smart.tls === 'opportunistic' || !smart.verifyCertificate)) {
    return all(job.recipients, REQUIRETLS_FAILED(job.domain, `${smart.what} is not used with verified TLS`));
  }
  const port = smart ? smart.port : config.remotePort;
  // MTA-STS is about a domain's MX hosts; a route or smarthost is the admin's own choice.
  const stsLookup = smart || !deps.mtaSts || job.tlsOptional ? undefined : await deps.mtaSts.lookup(job.domain);
  const sts = stsLookup?.policy;
  if (stsLookup?.fetchError && !sts) {
    const resultType = stsLookup.fetchError === 'invalid' ? 'sts-policy-invalid' : 'sts-policy-fetch-error';
    deps.tlsReports?.record(job.domain, { type: 'no-policy-found' }, { kind: 'failure', resultType, mx: '', ip: '', detail: stsLookup.problem });
  }
  const enforced = sts?.mode === 'enforce' ? sts : undefined;
  const verified = job.requireTls || enforced !== undefined;
  let hosts = found;
  if (enforced) {
    hosts = found.filter((t) => mxMatches(enforced, t.name));
    for (const t of found.filter((x) => !hosts.includes(x))) deps.tlsReports?.record(job.domain, enforced, { kind: 'failure', resultType: 'validation-failure', mx: t.name, ip: t.ips[0] ?? '', detail: 'MX not named by the policy' });
    if (!hosts.length) return all(job.recipients, STS_FAILED(job.domain, `no MX host matches its mx patterns (${enforced.mx.join(', ')})`));
  }
  // DANE applies to MX hosts, as MTA-STS does; where a host has secure TLSA records they decide, not the policy (RFC 8461 2).
  const daneOf = new Map<string, DaneLookup>();
  if (deps.dane && !smart && !job.tlsOptional) await Promise.all(hosts.map(async (t) => daneOf.set(t.name, await deps.dane!.lookup(t.name, port))));
  const daneUsed = [...daneOf.values()].some((d) => d.kind === 'dane' || d.kind === 'encrypt');
  const key = cacheKey(job, smart, port) + (enforced ? ' mta-sts' : '') + (daneUsed ? ' dane' : '');
  const cached = await cache?.take(key);
  if (cached) {
    const sent = await sendAll(cached, job);
    cache!.release(key, cached, sent.usable);
    // A session that died under us before any answer: a fresh one below, rather than a retry in minutes.
    if (sent.usable || [...sent.outcomes.values()].some((o) => o.kind !== 'temporary')) return sent.outcomes;
  }
  const opportunistic = !verified && (smart ? smart.tls === 'opportunistic' : config.opportunisticTls);
  // A testing-mode policy: each session is tried verified first, for the TLS report, and opportunistically if that fails.
  const trial = sts?.mode === 'testing' && !verified ? sts : undefined;
  // `strict`: this attempt must be STARTTLS with a verified certificate (REQUIRETLS, MTA-STS, or a testing policy's first try).
  const options = (target: Target, ip: string, security: Security): SMTPConnection.Options => {
    const strict = security === 'strict';
    const required = security !== 'usual';
    return {
      host: ip,
      port,
      name: deps.heloName,
      secure: smart?.tls === 'implicit',
      ignoreTLS: !required && (smart ? smart.tls === 'none' : !config.opportunisticTls),
      requireTLS: required || smart?.tls === 'starttls',
      opportunisticTLS: !required && opportunistic,
      // DANE: the chain is checked against the TLSA records once connected, not against CAs; SNI is the MX name (RFC 7672 8.1).
      tls: { rejectUnauthorized: strict || (smart !== undefined && smart.tls !== 'opportunistic' && smart.verifyCertificate), servername: isIP(target.name) ? undefined : target.name, ca: deps.ca },
      connectionTimeout: config.connectTimeout,
      greetingTimeout: config.greetingTimeout,
      socketTimeout: config.commandTimeout,
      allowInternalNetworkInterfaces: true,
    } as SMTPConnection.Options;
  };
  const report = (policy: ReportedPolicy | undefined, result: TlsSessionResult) => policy && deps.tlsReports?.record(job.domain, policy, result);
  const tlsaPolicy = (target: Target, lookup: DaneLookup): TlsaPolicy => ({
    type: 'tlsa',
    mx: target.name,
    records: lookup.kind === 'dane' ? lookup.records.map((r) => `${r.usage} ${r.selector} ${r.matchingType} ${r.data.toString('hex')}`) : [],
  });
  const failures: string[] = [];
  let tlsRefusals = 0;
  let daneFailures = 0;
  for (const target of hosts) {
    const dane = daneOf.get(target.name);
    if (dane?.kind === 'failed') {
      // RFC 7672 2.2: without an answer we cannot tell whether this host must be authenticated, so it is not used.
      daneFailures++;
      failures.push(`${target.name}: ${dane.error}`);
      report(tlsaPolicy(target, dane), { kind: 'failure', resultType: 'dnssec-invalid', mx: target.name, ip: target.ips[0] ?? '', detail: dane.error });
      continue;
    }
    // REQUIRETLS wants an authenticated server: TLSA records that only demand encryption do not give one.
    const byDane = dane?.kind === 'dane' || (dane?.kind === 'encrypt' && !job.requireTls) ? dane : undefined;
    const security: Security = byDane ? 'dane' : verified || trial !== undefined ? 'strict' : 'usual';
    for (const ip of target.ips) {
      if (!smart && deps.isOwnSocket(ip, port)) {
        return all(job.recipients, permanent('5.4.6', `Sorry, the MX ${target.name} of ${job.domain} is this server: mail would loop back to myself. (#5.4.6)`));
      }
      let conn: SMTPConnection;
      try {
        conn = await openConnection(options(target, ip, security));
        if (byDane?.kind === 'dane') {
          const check = checkChain(byDane.records, peerChain(conn) ?? [], byDane.names, Date.now());
          if (!check.ok) {
            conn.close();
            daneFailures++;
            failures.push(`${target.name} [${ip}]: ${check.why}`);
            report(tlsaPolicy(target, byDane), { kind: 'failure', resultType: 'tlsa-invalid', mx: target.name, ip, detail: check.why });
            continue;
          }
        }
        report(byDane?.kind === 'dane' ? tlsaPolicy(target, byDane) : byDane ? undefined : (enforced ?? trial), { kind: 'success' });
      } catch (err) {
        // Not reachable, or refused us at the greeting: the next host may do better.
        const e = err as SmtpError;
        if (byDane) {
          if (isTlsRefusal(e)) {
            daneFailures++;
            if (byDane.kind === 'dane') report(tlsaPolicy(target, byDane), { kind: 'failure', resultType: /STARTTLS/i.test(e.message) ? 'dane-required' : 'validation-failure', mx: target.name, ip, detail: e.message });
          }
          failures.push(`${target.name} [${ip}]: ${(e.response ?? e.message).trim()}`);
          continue;
        }
        const refusal = (verified || trial !== undefined) && isTlsRefusal(e);
        if (refusal) report(enforced ?? trial, { kind: 'failure', resultType: classifyTlsFailure(e.message), mx: target.name, ip, detail: e.message });
        if (refusal && trial) {
          try {
            conn = await openConnection(options(target, ip, 'usual'));
          } catch (err2) {
            failures.push(`${target.name} [${ip}]: ${((err2 as SmtpError).response ?? (err2 as Error).message).trim()}`);
            continue;
          }
        } else {
          if (verified && refusal) tlsRefusals++;
          failures.push(`${target.name} [${ip}]: ${(e.response ?? e.message).trim()}`);
          continue;
        }
      }
      cache?.madeNew();
      const session: CachedSession = { conn, host: target.name, opened: Date.now(), messages: 0 };
      let usable = false;
      try {
        if (job.requireTls && !serverSupports(conn, 'REQUIRETLS')) {
          tlsRefusals++;
          failures.push(`${target.name} [${ip}]: does not announce REQUIRETLS`);
          continue;
        }
        if (smart?.user) await login(conn, smart.user, smart.password ?? '');
        const sent = await sendAll(session, job);
        usable = sent.usable;
        return sent.outcomes;
      } catch (err) {
        const e = err as SmtpError;
        const reply = (e.response ?? e.message).trim();
        const outcome = e.responseCode && e.responseCode >= 500 ? permanent(statusOf(reply, e.responseCode), `Remote host ${target.name} said: ${reply}`, { remoteMta: target.name, diagnostic: reply }) : temporary('4.4.2', `${target.name}: ${reply}`);
        return all(job.recipients, outcome);
      } finally {
        if (cache) cache.release(key, session, usable);
        else conn.quit();
      }
    }
  }
  if (daneFailures > 0) return all(job.recipients, DANE_FAILED(job.domain, failures.join('; ')));
  if (job.requireTls && tlsRefusals > 0 && tlsRefusals === failures.length) return all(job.recipients, REQUIRETLS_FAILED(job.domain, failures.join('; ')));
  if (enforced && tlsRefusals > 0) return all(job.recipients, STS_FAILED(job.domain, failures.join('; ')));
  return all(job.recipients, temporary('4.4.1', `No host for ${job.domain} took the message: ${failures.join('; ')}`));
}

/**
 * The message's transactions on one session; after a failed one the rest
 * wait for the next round. `usable`: the session is fit for another message.
 */
async function sendAll(session: CachedSession, job: RemoteJob): Promise<{ outcomes: Outcomes; usable: boolean }> {
  const { conn, host } = session;
  const out: Outcomes = new Map();
  const dsnTaken = job.dsn !== undefined && serverSupports(conn, 'DSN');
  let broken: string | undefined;
  for (const tx of transactions(job)) {
    if (broken) {
      for (const r of tx.recipients) out.set(r, temporary('4.4.2', `Not tried on ${host}: an earlier transaction of this message failed there (${broken})`));
      continue;
    }
    const envelope: ClientEnvelope = { from: job.sender, to: tx.recipients, size: job.size };
    if (job.dsn) envelope.dsn = { ret: job.dsn.ret, envid: job.dsn.envid, notify: tx.dsn?.notify as SMTPConnection.DSNOption[] | undefined, orcpt: tx.dsn?.orcpt };
    if (job.requireTls) envelope.requireTLSExtensionEnabled = true;
    const stream = await job.message();
    session.messages++;
    try {
      const info = await send(conn, envelope, stream);
      for (const [r, o] of fromTransaction(tx, host, info, undefined, dsnTaken)) out.set(r, o);
    } catch (err) {
      stream.destroy();
      const e = err as SmtpError;
      for (const [r, o] of fromTransaction(tx, host, undefined, e)) out.set(r, o);
      // The server refused this message but the session is sound (nodemailer's own pool does the same): RSET and go on.
      const refusedOnly = (e.code === 'EENVELOPE' || e.code === 'EMESSAGE') && e.responseCode !== 421;
      if (!refusedOnly || !(await rset(conn))) broken = (e.response ?? e.message).trim();
    }
  }
  return { outcomes: out, usable: broken === undefined };
}

