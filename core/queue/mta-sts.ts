/**
 * MTA-STS (RFC 8461), the sending side: whether a destination domain asks
 * that mail reach it only over TLS with a certificate valid for an MX it
 * names. The `_mta-sts` TXT record says a policy exists and gives its id;
 * the policy itself is fetched over HTTPS (a verified certificate for
 * `mta-sts.DOMAIN`, no redirects, at most 64 KiB) and cached for its
 * max_age. A cached policy is refetched when the TXT id changes, and in the
 * background once less than a quarter of its life is left, so a domain
 * whose web server is briefly down keeps its protection (RFC 8461 5.1:
 * failing to fetch keeps the cached policy).
 */
import type { Dns } from '../services/dns.js';
import { verifiedHttps } from './verified-https.js';

export type StsMode = 'enforce' | 'testing' | 'none';

export interface StsPolicy {
  readonly mode: StsMode;
  /** MX patterns: a name, or `*.example.com` for one label below it. */
  readonly mx: readonly string[];
  /** Seconds. */
  readonly maxAge: number;
  readonly id: string;
  /** When it was fetched (ms since the epoch). */
  readonly fetched: number;
}

export interface StsFetchOptions {
  /** Port of the policy host (443; another value only for tests). */
  readonly port: number;
  readonly timeoutMs: number;
  /** Extra trusted certificates (PEM), as for SMTP. */
  readonly ca?: string | Buffer;
}

const MAX_POLICY_BYTES = 64 * 1024;
/** RFC 8461 3.2: max_age is at most 31557600 s (a year). */
const MAX_AGE_LIMIT = 31_557_600;

/** Parses a policy body; an error names what is wrong. */
export function parsePolicy(text: string, id: string, fetched: number): StsPolicy {
  const fields = new Map<string, string[]>();
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim()) continue;
    const colon = line.indexOf(':');
    if (colon < 0) throw new Error(`policy line without a colon: ${line.slice(0, 60)}`);
    const key = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    fields.set(key, [...(fields.get(key) ?? []), value]);
  }
  if (fields.get('version')?.[0] !== 'STSv1') throw new Error('policy version is not STSv1');
  const mode = fields.get('mode')?.[0];
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') throw new Error(`policy mode ${mode ?? '(missing)'} is not enforce, testing or none`);
  const maxAgeText = fields.get('max_age')?.[0] ?? '';
  if (!/^\d{1,10}$/.test(maxAgeText)) throw new Error('policy max_age is missing or not a number');
  const maxAge = Math.min(Number(maxAgeText), MAX_AGE_LIMIT);
  const mx = (fields.get('mx') ?? []).map((m) => m.toLowerCase().replace(/\.$/, ''));
  if (mode !== 'none' && !mx.length) throw new Error('policy has no mx line');
  return { mode, mx, maxAge, id, fetched };
}

/** Whether an MX host name matches one of the policy's patterns (RFC 8461 4.1: a wildcard covers one label). */
export function mxMatches(policy: Pick<StsPolicy, 'mx'>, host: string): boolean {
  const name = host.toLowerCase().replace(/\.$/, '');
  return policy.mx.some((p) => (p.startsWith('*.') ? name.endsWith(p.slice(1)) && !name.slice(0, -(p.length - 1)).includes('.') && name.length > p.length - 1 : name === p));
}

/** The id of the `_mta-sts` TXT record (`v=STSv1; id=...`), undefined when there is none; throws on DNS failure. */
async function recordId(dns: Dns, domain: string): Promise<string | undefined> {
  const txt = await dns.txt(`_mta-sts.${domain}`);
  if (txt.kind === 'failed') throw new Error(`DNS lookup of _mta-sts.${domain} failed: ${txt.error}`);
  if (txt.kind === 'none') return undefined;
  const records = txt.records.filter((r) => /^v=STSv1\s*(;|$)/.test(r));
  // RFC 8461 3.1: more than one record is as good as none.
  if (records.length !== 1) return undefined;
  return /(?:^|;)\s*id=([A-Za-z0-9]{1,32})\s*(?:;|$)/.exec(records[0]!)?.[1];
}

export interface StsLookup {
  /** The policy in force for the domain, or undefined for none. */
  readonly policy?: StsPolicy;
  /** Why a policy that should be there could not be had (logged; the cached one, if any, still applies). */
  readonly problem?: string;
  /** The TXT record announced a policy that could not be fetched (`fetch`) or read (`invalid`): TLS-RPT reports it. */
  readonly fetchError?: 'fetch' | 'invalid';
}

/** A policy fetched but not readable (RFC 8460's sts-policy-invalid, as against a fetch that failed). */
class PolicyInvalid extends Error {}

export class MtaSts {
  private readonly cache = new Map<string, StsPolicy>();
  private readonly refreshing = new Set<string>();

  constructor(
    private readonly dns: Dns,
    private readonly options: () => StsFetchOptions,
    private readonly now: () => number = Date.now,
  ) {}

  /** The policy for a destination domain: the cached one while fresh and its id unchanged, else a new fetch. */
  async lookup(domain: string): Promise<StsLookup> {
    const d = domain.toLowerCase();
    const cached = this.valid(d);
    let id: string | undefined;
    try {
      id = await recordId(this.dns, d);
    } catch (err) {
      return { policy: cached, problem: (err as Error).message };
    }
    if (cached && (id === undefined || id === cached.id)) {
      // RFC 8461 5.1: no TXT record does not end a cached policy; it runs out with its max_age.
      if (this.ageFraction(cached) > 0.75 && id !== undefined) this.refreshSoon(d, id);
      return { policy: cached };
    }
    if (id === undefined) return {};
    try {
      return { policy: await this.fetch(d, id) };
    } catch (err) {
      const fetchError = err instanceof PolicyInvalid ? 'invalid' : 'fetch';
      return { policy: cached, problem: `MTA-STS policy of ${d}: ${(err as Error).message}`, fetchError };
    }
  }

  /** Policies cached now, for tests and status. */
  cached(domain: string): StsPolicy | undefined {
    return this.valid(domain.toLowerCase());
  }

  private valid(domain: string): StsPolicy | undefined {
    const p = this.cache.get(domain);
    if (p && this.now() < p.fetched + p.maxAge * 1000) return p;
    if (p) this.cache.delete(domain);
    return undefined;
  }

  private ageFraction(p: StsPolicy): number {
    return (this.now() - p.fetched) / (p.maxAge * 1000);
  }

  private refreshSoon(domain: string, id: string): void {
    if (this.refreshing.has(domain)) return;
    this.refreshing.add(domain);
    void this.fetch(domain, id)
      .catch(() => undefined)
      .finally(() => this.refreshing.delete(domain));
  }

  private async fetch(domain: string, id: string): Promise<StsPolicy> {
    const o = this.options();
    const url = new URL(`https://mta-sts.${domain}:${o.port}/.well-known/mta-sts.txt`);
    const res = await verifiedHttps(this.dns, { url, ca: o.ca, timeoutMs: o.timeoutMs, maxBytes: MAX_POLICY_BYTES });
    if (res.status !== 200) throw new Error(`${url.hostname} answered HTTP ${res.status} (redirects are not followed)`);
    let policy: StsPolicy;
    try {
      policy = parsePolicy(res.body.toString('utf8'), id, this.now());
    } catch (err) {
      throw new PolicyInvalid((err as Error).message);
    }
    this.cache.set(domain, policy);
    return policy;
  }
}
