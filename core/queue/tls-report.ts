/**
 * TLS-RPT (RFC 8460), the sending side: every outbound session to a domain
 * with an MTA-STS policy, or to an MX host with DANE TLSA records, counts as
 * a success or as a failure of a given kind, per UTC day; after the day
 * ends, the day's counts for a domain (each of its policies) go as
 * one JSON report (gzipped) to the addresses of its `_smtp._tls` TXT record:
 * in a multipart/report mail to the `mailto:` ones, injected into the queue
 * like a bounce, and by HTTPS POST to the `https:` ones. The day's counts are
 * kept in `dataDir/tlsrpt/DAY.json` (written a second after a change), so a
 * restart keeps them; a kill -9 loses at most that second.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Logger } from 'pino';
import { rfc5322Date } from '../date.js';
import type { Dns } from '../services/dns.js';
import type { StsPolicy } from './mta-sts.js';
import type { Spool } from './spool.js';
import { verifiedHttps } from './verified-https.js';

/** RFC 8460 4.3's result types that sending can observe. */
export type TlsResultType =
  | 'starttls-not-supported'
  | 'certificate-host-mismatch'
  | 'certificate-expired'
  | 'certificate-not-trusted'
  | 'validation-failure'
  // DANE: no record matched; the DNSSEC lookup failed or was bogus; the server would not do TLS although TLSA records require it.
  | 'tlsa-invalid'
  | 'dnssec-invalid'
  | 'dane-required'
  // MTA-STS: the TXT record announced a policy that could not be fetched, or was fetched and could not be read.
  | 'sts-policy-fetch-error'
  | 'sts-policy-invalid';

/** The DANE policy of one MX host (RFC 8460 4.2: policy-type tlsa, its TLSA records as the policy string). */
export interface TlsaPolicy {
  readonly type: 'tlsa';
  readonly mx: string;
  /** Presentation form: `3 1 1 <hex>`. */
  readonly records: readonly string[];
}

/** A domain that announced an MTA-STS policy nobody could have (RFC 8460 4.2: policy-type no-policy-found). */
export interface NoPolicyFound {
  readonly type: 'no-policy-found';
}

/** A policy sessions are counted under. */
export type ReportedPolicy = StsPolicy | TlsaPolicy | NoPolicyFound;

/** As kept on disk: an STS policy has no `type` (files from before DANE read as they are). */
type KeptPolicy = { readonly type?: undefined; readonly mode: string; readonly mx: readonly string[]; readonly maxAge: number } | TlsaPolicy | NoPolicyFound;

export type TlsSessionResult = { readonly kind: 'success' } | { readonly kind: 'failure'; readonly resultType: TlsResultType; readonly mx: string; readonly ip: string; readonly detail?: string };

interface FailureCount {
  readonly resultType: TlsResultType;
  readonly mx: string;
  readonly ip: string;
  readonly detail?: string;
  count: number;
}

interface DomainDay {
  policy: KeptPolicy;
  success: number;
  failures: FailureCount[];
}

/** Keyed by domain for its MTA-STS policy, `DOMAIN tlsa MXHOST` for a DANE host. */
type Day = Record<string, DomainDay>;

const keyOf = (domain: string, policy: ReportedPolicy) =>
  !('type' in policy) ? domain.toLowerCase() : policy.type === 'tlsa' ? `${domain.toLowerCase()} tlsa ${policy.mx.toLowerCase()}` : `${domain.toLowerCase()} no-policy-found`;
const kept = (policy: ReportedPolicy): KeptPolicy => ('type' in policy ? policy : { mode: policy.mode, mx: policy.mx, maxAge: policy.maxAge });

/** Which of RFC 8460's result types an error from the TLS session is. */
export function classifyTlsFailure(message: string): TlsResultType {
  if (/altnames|does not match|Hostname\/IP/i.test(message)) return 'certificate-host-mismatch';
  if (/expired/i.test(message)) return 'certificate-expired';
  if (/self.signed|unable to (get|verify)|certificate chain|issuer/i.test(message)) return 'certificate-not-trusted';
  if (/STARTTLS/i.test(message)) return 'starttls-not-supported';
  return 'validation-failure';
}

const dayOf = (ms: number) => new Date(ms).toISOString().slice(0, 10);

export interface TlsReportDeps {
  readonly dir: string;
  readonly dns: Dns;
  readonly spool: Spool;
  readonly log: Logger;
  readonly hostname: string;
  readonly now: () => number;
  /** Extra trusted CAs for https: report addresses (delivery.caFile). */
  readonly ca?: () => Buffer | undefined;
}

export class TlsReports {
  private readonly days = new Map<string, Day>();
  private loaded: Promise<void> | undefined;
  private writeTimer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: TlsReportDeps) {}

  /** Counts one session to a domain with a policy. */
  record(domain: string, policy: ReportedPolicy, result: TlsSessionResult): void {
    const day = dayOf(this.deps.now());
    let counts = this.days.get(day);
    if (!counts) this.days.set(day, (counts = {}));
    const d = (counts[keyOf(domain, policy)] ??= { policy: kept(policy), success: 0, failures: [] });
    d.policy = kept(policy);
    if (result.kind === 'success') d.success++;
    else {
      const same = d.failures.find((f) => f.resultType === result.resultType && f.mx === result.mx && f.ip === result.ip);
      if (same) same.count++;
      else d.failures.push({ resultType: result.resultType, mx: result.mx, ip: result.ip, detail: result.detail, count: 1 });
    }
    this.scheduleWrite();
  }

  /** The counts of a day so far (tests, status). */
  async counts(day: string): Promise<Day | undefined> {
    await this.load();
    return this.days.get(day);
  }

  /** Reports every finished day (before today, UTC) and forgets it; returns how many reports were queued. */
  async sendDue(): Promise<number> {
    await this.load();
    const today = dayOf(this.deps.now());
    let sent = 0;
    for (const [day, counts] of [...this.days]) {
      if (day >= today) continue;
      const byDomain = new Map<string, DomainDay[]>();
      for (const [key, d] of Object.entries(counts)) {
        const domain = key.split(' ')[0]!;
        byDomain.set(domain, [...(byDomain.get(domain) ?? []), d]);
      }
      for (const [domain, policies] of byDomain) sent += await this.report(day, domain, policies);
      this.days.delete(day);
      await unlink(this.file(day)).catch(() => undefined);
    }
    return sent;
  }

  /** Writes what is pending now (at stop). */
  async flush(): Promise<void> {
    if (this.writeTimer) clearTimeout(this.writeTimer);
    this.writeTimer = undefined;
    await this.writeAll();
  }

  private async report(day: string, domain: string, policies: readonly DomainDay[]): Promise<number> {
    const { dns, log, hostname } = this.deps;
    const txt = await dns.txt(`_smtp._tls.${domain}`);
    const record = txt.kind === 'found' ? txt.records.find((r) => /^v=TLSRPTv1\s*;/.test(r)) : undefined;
    const rua = /(?:^|;)\s*rua=([^;]+)/.exec(record ?? '')?.[1];
    if (!rua) {
      log.info({ event: 'tlsrpt', domain, day }, `TLS-RPT: ${domain} publishes no report address; the counts of ${day} are dropped`);
      return 0;
    }
    const targets = rua.split(',').map((x) => x.trim());
    const mailto = targets.filter((x) => /^mailto:/i.test(x)).map((x) => decodeURIComponent(x.slice(7)).replace(/\?.*$/, ''));
    const posts = targets.filter((x) => /^https:\/\//i.test(x));
    for (const other of targets.filter((x) => !/^(mailto:|https:\/\/)/i.test(x))) log.warn({ event: 'tlsrpt', domain, rua: other }, `TLS-RPT: report address ${other} of ${domain} is neither mailto: nor https:`);
    if (!mailto.length && !posts.length) return 0;
    const id = `${day}T00:00:00Z_${domain}@${hostname}.${randomBytes(3).toString('hex')}`;
    const json = {
      'organization-name': hostname,
      'date-range': { 'start-datetime': `${day}T00:00:00Z`, 'end-datetime': `${day}T23:59:59Z` },
      'contact-info': `postmaster@${hostname}`,
      'report-id': id,
      policies: policies.map((d) => ({
          policy: d.policy.type === 'tlsa'
            ? { 'policy-type': 'tlsa', 'policy-string': d.policy.records, 'policy-domain': domain, 'mx-host': [d.policy.mx] }
            : d.policy.type === 'no-policy-found'
            ? { 'policy-type': 'no-policy-found', 'policy-domain': domain }
            : {
                'policy-type': 'sts',
                'policy-string': ['version: STSv1', `mode: ${d.policy.mode}`, ...d.policy.mx.map((m) => `mx: ${m}`), `max_age: ${d.policy.maxAge}`],
                'policy-domain': domain,
                'mx-host': d.policy.mx,
              },
          summary: { 'total-successful-session-count': d.success, 'total-failure-session-count': d.failures.reduce((n, f) => n + f.count, 0) },
          'failure-details': d.failures.map((f) => ({
            'result-type': f.resultType,
            // A policy that could not be fetched has no session: no MX, no IP.
            ...(f.mx ? { 'receiving-mx-hostname': f.mx } : {}),
            ...(f.ip ? { 'receiving-ip': f.ip } : {}),
            'failed-session-count': f.count,
            ...(f.detail ? { 'additional-information': f.detail.slice(0, 200) } : {}),
          })),
        })),
    };
    const gz = gzipSync(Buffer.from(JSON.stringify(json)));
    let sent = 0;
    for (const url of posts) {
      try {
        await this.post(url, gz);
        sent++;
        log.info({ event: 'tlsrpt', domain, day, to: url }, `TLS-RPT: report of ${day} for ${domain} posted to ${url}`);
      } catch (err) {
        log.warn({ event: 'tlsrpt', domain, day, to: url, err: (err as Error).message }, `TLS-RPT: cannot post the report of ${day} for ${domain} to ${url}: ${(err as Error).message}`);
      }
    }
    if (!mailto.length) return sent;
    const start = Date.parse(`${day}T00:00:00Z`) / 1000;
    const fileName = `${hostname}!${domain}!${start}!${start + 86_399}!${randomBytes(4).toString('hex')}.json.gz`;
    const boundary = `tlsrpt.${randomBytes(8).toString('hex')}`;
    const now = this.deps.now();
    const body = [
      `From: TLS reporting <postmaster@${hostname}>`,
      `To: ${mailto.join(', ')}`,
      `Subject: Report Domain: ${domain} Submitter: ${hostname} Report-ID: <${id}>`,
      `Date: ${rfc5322Date(now)}`,
      `Message-ID: <tlsrpt.${randomBytes(6).toString('hex')}@${hostname}>`,
      `TLS-Report-Domain: ${domain}`,
      `TLS-Report-Submitter: ${hostname}`,
      'Auto-Submitted: auto-generated',
      'MIME-Version: 1.0',
      `Content-Type: multipart/report; report-type="tlsrpt"; boundary="${boundary}"`,
      '',
      `--${boundary}`,
      'Content-Type: text/plain; charset=us-ascii',
      '',
      `This is an aggregate TLS report (RFC 8460) from ${hostname} about mail sent to ${domain} on ${day}.`,
      '',
      `--${boundary}`,
      `Content-Type: application/tlsrpt+gzip; name="${fileName}"`,
      'Content-Transfer-Encoding: base64',
      `Content-Disposition: attachment; filename="${fileName}"`,
      '',
      ...(gz.toString('base64').match(/.{1,76}/g) ?? []),
      '',
      `--${boundary}--`,
      '',
    ].join('\r\n');
    const queued = await this.deps.spool.inject(Buffer.from(body), {
      sender: '',
      senderParams: {},
      recipients: mailto.map((address) => ({ address, params: {} })),
      received: now,
      listener: 'tlsrpt',
      remoteIp: '127.0.0.1',
      heloName: undefined,
      authUser: undefined,
      prependHeaders: `Received: (yubin TLS report for ${domain}); ${rfc5322Date(now)}\r\n`,
      kind: 'bounce',
    });
    log.info({ event: 'tlsrpt', domain, day, id: queued, to: mailto }, `TLS-RPT: report of ${day} for ${domain} to ${mailto.join(', ')} as ${queued}`);
    return sent + 1;
  }

  /** RFC 8460 5.4: POST the gzipped report over verified HTTPS; any 2xx is a receipt. */
  private async post(url: string, gz: Buffer): Promise<void> {
    const res = await verifiedHttps(this.deps.dns, { url: new URL(url), method: 'POST', body: gz, contentType: 'application/tlsrpt+gzip', ca: this.deps.ca?.(), timeoutMs: 30_000, maxBytes: 64 * 1024 });
    if (res.status < 200 || res.status >= 300) throw new Error(`HTTP ${res.status}`);
  }

  private file(day: string): string {
    return path.join(this.deps.dir, `${day}.json`);
  }

  /** Reads the days kept on disk, once; counts made before that are added to them. */
  private load(): Promise<void> {
    this.loaded ??= (async () => {
      const names = await readdir(this.deps.dir).catch(() => [] as string[]);
      for (const name of names) {
        const m = /^(\d{4}-\d{2}-\d{2})\.json$/.exec(name);
        if (!m) continue;
        const kept = JSON.parse(await readFile(path.join(this.deps.dir, name), 'utf8')) as Day;
        const now = this.days.get(m[1]!) ?? {};
        for (const [domain, d] of Object.entries(kept)) {
          const cur = now[domain];
          if (!cur) now[domain] = d;
          else {
            cur.success += d.success;
            cur.failures.push(...d.failures);
          }
        }
        this.days.set(m[1]!, now);
      }
    })();
    return this.loaded;
  }

  private scheduleWrite(): void {
    if (this.writeTimer) return;
    this.writeTimer = setTimeout(() => {
      this.writeTimer = undefined;
      void this.writeAll().catch((err: Error) => this.deps.log.error({ event: 'tlsrpt', err: err.message }, 'cannot write the TLS-RPT counts'));
    }, 1000);
    this.writeTimer.unref();
  }

  private async writeAll(): Promise<void> {
    await this.load();
    if (!this.days.size) return;
    await mkdir(this.deps.dir, { recursive: true });
    for (const [day, counts] of this.days) {
      const tmp = `${this.file(day)}.tmp`;
      await writeFile(tmp, JSON.stringify(counts));
      await rename(tmp, this.file(day));
    }
  }
}
