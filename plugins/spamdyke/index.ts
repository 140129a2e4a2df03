/**
 * spamdyke: connection-time anti-spam filters in front of the SMTP session,
 * after spamdyke 5.0.1 (option names in options.ts), plus S25R and taRgrey.
 *
 * As in spamdyke, the connection-level work (rDNS, DNSBL lookups) starts at
 * connect, but the refusal is given at RCPT — MAIL still gets 250 — so the
 * sending MTA records it per recipient, and a client that authenticates
 * after connecting is never filtered (checked at RCPT time). Authenticated,
 * RELAYCLIENT and whitelisted (connection.state.trusted) sessions are never
 * filtered or greylisted.
 *
 * A DNS failure never counts as a negative answer: a failed PTR lookup is not
 * "no rDNS", a failed MX lookup is not "no MX", a failed DNSBL query is not a
 * listing. Such failures are logged and the rule is skipped (fail open).
 *
 * Every refusal logs one info line `spamdyke refused` with the rule and the
 * DNS answer behind it (zone, codes, txt, ptr), so "why was this client
 * refused?" is one grep.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  answer,
  definePlugin,
  lookupDnsbl,
  lookupRhsbl,
  normalizeIp,
  WatchedFile,
  type Connection,
  type DnsblResult,
  type EnhancedCode,
  type Fcrdns,
  type PermanentCode,
  type Reject,
  type Defer,
  type TemporaryCode,
} from '../../core/index.js';
import { Greylist } from './greylist.js';
import { addressList, ipList, listLines, rdnsList, zoneLines, type Matcher } from './lists.js';
import { options, type Rule, type SpamdykeOptions } from './options.js';
import { ipInCcRdns, rhsCandidates } from './rdns.js';
import { s25rMatch } from './s25r.js';

export { options } from './options.js';

/** What a refusal is made of: the rule and the DNS evidence for the log. */
export interface Refusal {
  readonly rule: Rule;
  /** Text from the list (a DNSBL's TXT record) used unless the reply text is configured. */
  readonly listText?: string;
  readonly detail: {
    readonly zone?: string;
    readonly codes?: readonly string[];
    readonly txt?: string;
    readonly ptr?: string;
    readonly entry?: string;
    readonly [key: string]: unknown;
  };
}

/** The connection-level outcome, computed once per connection. */
export interface ConnectionVerdict {
  /** A whitelist matched (its name): nothing is filtered. */
  readonly trustedBy?: string;
  readonly refusal?: Refusal;
  /** taRgrey: the S25R rule that matched; the client is greylisted instead of refused. */
  readonly s25r?: number;
  readonly ptr?: string;
}

interface TxInfo {
  /** The sender (or its domain) is whitelisted: nothing is filtered. */
  senderWhitelisted?: string;
  senderRefusal?: Promise<Refusal | undefined>;
  /** Null sender that must be greylisted: deferred after DATA. */
  nullSenderGreylist?: boolean;
}

declare module '../../core/hooks.js' {
  interface TransactionState {
    spamdyke?: TxInfo;
  }
}

/** spamdyke's texts; its 421 codes become 451 (a 421 at RCPT would close the connection). */
const DEFAULT_REPLIES: Record<Rule, { code: TemporaryCode | PermanentCode; enhanced: string; text: string }> = {
  'ip-blacklist': { code: 554, enhanced: '5.7.1', text: 'Refused. Your IP address is blacklisted.' },
  'rdns-blacklist': { code: 554, enhanced: '5.7.1', text: 'Refused. Your domain name is blacklisted.' },
  'empty-rdns': { code: 451, enhanced: '4.7.25', text: 'Refused. You have no reverse DNS entry.' },
  'unresolvable-rdns': { code: 451, enhanced: '4.7.25', text: 'Refused. Your reverse DNS entry does not resolve.' },
  'ip-in-cc-rdns': { code: 554, enhanced: '5.7.1', text: 'Refused. Your reverse DNS entry contains your IP address and a country code.' },
  'dns-blacklist': { code: 554, enhanced: '5.7.1', text: 'Refused. Your IP address is listed in the RBL at {zone}' },
  'rhs-blacklist': { code: 554, enhanced: '5.7.1', text: 'Refused. Your domain name is listed in the RHSBL at {zone}' },
  s25r: { code: 450, enhanced: '4.7.1', text: 'Refused. Your reverse DNS entry looks like a dynamic address. Try again later.' },
  'sender-blacklist': { code: 554, enhanced: '5.7.1', text: 'Refused. Your sender address has been blacklisted.' },
  'recipient-blacklist': { code: 554, enhanced: '5.7.1', text: 'Refused. Mail is not being accepted at this address.' },
  'sender-no-mx': { code: 451, enhanced: '4.1.8', text: 'Refused. The domain of your sender address has no mail exchanger (MX).' },
  'max-recipients': { code: 452, enhanced: '4.5.3', text: 'Too many recipients. Try the remaining addresses again later.' },
  graylist: { code: 451, enhanced: '4.7.1', text: 'Your address has been graylisted. Try again later.' },
};

/** A list from inline entries plus an optional file (re-read when it changes). */
class ListSource {
  private constructor(
    private readonly fixed: Matcher,
    private readonly file: WatchedFile<Matcher> | undefined,
  ) {}

  static async open(build: (entries: string[]) => Matcher, entries: readonly string[], file: string | undefined, env: FileEnv): Promise<ListSource> {
    const watched = file ? await WatchedFile.open(env.resolvePath(file), (t) => build(listLines(t)), { log: env.log, checkInterval: env.checkInterval }) : undefined;
    return new ListSource(build([...entries]), watched);
  }

  get empty(): boolean {
    return this.fixed.size === 0 && this.file === undefined;
  }

  async match(value: string): Promise<string | undefined> {
    return this.fixed.match(value) ?? (this.file ? (await this.file.get()).match(value) : undefined);
  }
}

class ZoneSource {
  private constructor(
    private readonly fixed: readonly string[],
    private readonly file: WatchedFile<string[]> | undefined,
  ) {}

  static async open(entries: readonly string[], file: string | undefined, env: FileEnv): Promise<ZoneSource> {
    const watched = file ? await WatchedFile.open(env.resolvePath(file), zoneLines, { log: env.log, checkInterval: env.checkInterval }) : undefined;
    return new ZoneSource(entries.map((z) => z.toLowerCase().replace(/\.$/, '')), watched);
  }

  get empty(): boolean {
    return this.fixed.length === 0 && this.file === undefined;
  }

  async zones(): Promise<string[]> {
    return [...new Set([...this.fixed, ...(this.file ? await this.file.get() : [])])];
  }
}

interface FileEnv {
  resolvePath(p: string): string;
  log: import('pino').Logger;
  checkInterval: number;
}

function fillZone(text: string, zone: string | undefined): string {
  return zone === undefined ? text : text.replaceAll('{zone}', zone);
}

/** The first listed result, in zone order; failures are logged and skipped. */
function firstListed(results: readonly DnsblResult[], onFail: (r: Extract<DnsblResult, { kind: 'failed' }>) => void) {
  for (const r of results) if (r.kind === 'failed') onFail(r);
  return results.find((r): r is Extract<DnsblResult, { kind: 'listed' }> => r.kind === 'listed');
}

export default definePlugin({
  name: 'spamdyke',
  // Reads what tcprules (RELAYCLIENT, RBLSMTPD) and whitelist (trusted) set at connect.
  after: ['tcprules', 'whitelist'],
  options,
  async setup({ options: o, log, services, resolvePath }) {
    const env: FileEnv = { resolvePath, log, checkInterval: o.checkInterval };
    const [ipBlack, ipWhite, rdnsBlack, rdnsWhite, senderBlack, senderWhite, rcptBlack, rcptWhite, s25rIpWhite, s25rRdnsWhite] = await Promise.all([
      ListSource.open(ipList, o.ipBlacklistEntry, o.ipBlacklistFile, env),
      ListSource.open(ipList, o.ipWhitelistEntry, o.ipWhitelistFile, env),
      ListSource.open(rdnsList, o.rdnsBlacklistEntry, o.rdnsBlacklistFile, env),
      ListSource.open(rdnsList, o.rdnsWhitelistEntry, o.rdnsWhitelistFile, env),
      ListSource.open(addressList, o.senderBlacklistEntry, o.senderBlacklistFile, env),
      ListSource.open(addressList, o.senderWhitelistEntry, o.senderWhitelistFile, env),
      ListSource.open(addressList, o.recipientBlacklistEntry, o.recipientBlacklistFile, env),
      ListSource.open(addressList, o.recipientWhitelistEntry, o.recipientWhitelistFile, env),
      ListSource.open(ipList, o.s25r.ipWhitelist, o.s25r.ipWhitelistFile, env),
      ListSource.open(rdnsList, o.s25r.rdnsWhitelist, o.s25r.rdnsWhitelistFile, env),
    ]);
    const s25rPatterns = o.s25r.rdnsWhitelistPattern.map((p) => new RegExp(p, 'i'));
    const [dnsBlack, dnsWhite, rhsBlack, rhsWhite] = await Promise.all([
      ZoneSource.open(o.dnsBlacklistEntry, o.dnsBlacklistFile, env),
      ZoneSource.open(o.dnsWhitelistEntry, o.dnsWhitelistFile, env),
      ZoneSource.open(o.rhsBlacklistEntry, o.rhsBlacklistFile, env),
      ZoneSource.open(o.rhsWhitelistEntry, o.rhsWhitelistFile, env),
    ]);
    const needPtr =
      o.rejectEmptyRdns || o.rejectUnresolvableRdns || o.rejectIpInCcRdns || o.s25r.enabled || !rdnsBlack.empty || !rdnsWhite.empty || !rhsBlack.empty || !rhsWhite.empty;

    let greylist: Greylist | undefined;
    const gl = (): Greylist =>
      (greylist ??= new Greylist(services.store, () => services.clock.now(), {
        key: o.graylist.key,
        minDelayMs: o.graylist.minDelay * 1000,
        retryWindowMs: o.graylist.retryWindow * 1000,
        whitelistLifetimeMs: o.graylist.whitelistLifetime * 1000,
      }));

    const reply = (r: Refusal): Reject | Defer => {
      const d = DEFAULT_REPLIES[r.rule];
      const over = o.replies[r.rule] ?? {};
      const code = over.code ?? d.code;
      const cls = String(code)[0]!;
      const enhanced = over.enhanced ?? (d.enhanced[0] === cls ? d.enhanced : `${cls}.7.1`);
      const text = fillZone(over.text ?? r.listText ?? d.text, r.detail.zone);
      return code < 500 ? answer.defer(code as TemporaryCode, enhanced as EnhancedCode<4>, text) : answer.reject(code as PermanentCode, enhanced as EnhancedCode<5>, text);
    };

    const refuse = (conn: Connection, r: Refusal, extra: Record<string, unknown>): Reject | Defer => {
      const a = reply(r);
      log.info({ conn: conn.id, ip: normalizeIp(conn.remoteIp), rule: r.rule, code: a.code, ...r.detail, ...extra }, `spamdyke refused: ${r.rule}`);
      return a;
    };

    /** Never filtered: authenticated, RELAYCLIENT, whitelisted by another plugin or by us. */
    const exempt = (c: Connection) => c.authUser !== undefined || c.state.relayClient !== undefined || c.state.trusted === true;

    const dnsblAll = (zones: readonly string[], ip: string, txt: boolean, signal?: AbortSignal): Promise<DnsblResult[]> =>
      Promise.all(zones.map((zone) => lookupDnsbl(services.dns, zone, ip, { txt, signal }).catch((err: Error) => ({ kind: 'failed' as const, zone, query: ip, error: err.message }))));
    const rhsblAll = async (zones: readonly string[], domains: readonly string[], signal?: AbortSignal): Promise<DnsblResult[]> =>
      (
        await Promise.all(
          zones.map((zone) =>
            Promise.all(domains.map((d) => lookupRhsbl(services.dns, zone, d, { txt: true, signal }).catch((err: Error) => ({ kind: 'failed' as const, zone, query: d, error: err.message })))),
          ),
        )
      ).flat();

    /** `signal` fires when the connection closes (the verdict outlives the hook call that started it). */
    const decide = async (conn: Connection, signal: AbortSignal): Promise<ConnectionVerdict> => {
      const ip = normalizeIp(conn.remoteIp);
      const white = await ipWhite.match(ip);
      if (white) return { trustedBy: `ip-whitelist ${white}` };
      const [wZones, bZones, rbZones, rwZones] = await Promise.all([dnsWhite.zones(), dnsBlack.zones(), rhsBlack.zones(), rhsWhite.zones()]);
      // Everything that depends only on the IP starts at once, in parallel with the rDNS lookup.
      const whiteLookups = dnsblAll(wZones, ip, false, signal);
      const blackLookups = dnsblAll(bZones, ip, true, signal);
      const fc: Fcrdns | undefined = needPtr ? await services.dns.fcrdns(ip, { signal }).catch((err: Error) => ({ kind: 'failed' as const, error: err.message })) : undefined;
      const confirmed = fc?.kind === 'confirmed' ? fc.name : undefined;
      const ptr = fc?.kind === 'confirmed' ? fc.name : fc?.kind === 'unconfirmed' ? fc.names[0] : undefined;
      if (confirmed && !conn.remoteHost) conn.remoteHost = confirmed;
      if (fc?.kind === 'failed') log.warn({ conn: conn.id, ip, error: fc.error }, 'spamdyke: rDNS lookup failed, rDNS rules skipped (fail open)');
      const rhsWhiteLookups = confirmed && rwZones.length ? rhsblAll(rwZones, rhsCandidates(confirmed), signal) : Promise.resolve([]);
      const rhsBlackLookups = ptr && rbZones.length ? rhsblAll(rbZones, rhsCandidates(ptr), signal) : Promise.resolve([]);
      const logFail = (r: { zone: string; query: string; error: string }) =>
        log.warn({ conn: conn.id, ip, zone: r.zone, query: r.query, error: r.error }, 'spamdyke: list lookup failed, treated as not listed (fail open)');

      // Whitelists first: any of them bypasses every filter.
      const dw = firstListed(await whiteLookups, logFail);
      if (dw) return { trustedBy: `dns-whitelist ${dw.zone}`, ptr };
      if (confirmed) {
        const rw = await rdnsWhite.match(confirmed);
        if (rw) return { trustedBy: `rdns-whitelist ${rw}`, ptr };
      }
      const hw = firstListed(await rhsWhiteLookups, logFail);
      if (hw) return { trustedBy: `rhs-whitelist ${hw.zone} ${hw.query}`, ptr };

      const verdict = (rule: Rule, detail: Refusal['detail'] = {}, listText?: string): ConnectionVerdict => ({ refusal: { rule, detail: { ptr, ...detail }, listText }, ptr });
      const ipb = await ipBlack.match(ip);
      if (ipb) return verdict('ip-blacklist', { entry: ipb });
      if (fc?.kind === 'confirmed' || fc?.kind === 'unconfirmed') {
        for (const name of fc.names) {
          const rb = await rdnsBlack.match(name);
          if (rb) return verdict('rdns-blacklist', { entry: rb, ptr: name });
        }
      }
      if (o.rejectEmptyRdns && fc?.kind === 'none') return verdict('empty-rdns');
      if (o.rejectUnresolvableRdns && fc?.kind === 'unconfirmed') return verdict('unresolvable-rdns', { names: fc.names });
      if (o.rejectIpInCcRdns && ptr && ipInCcRdns(ptr, ip)) return verdict('ip-in-cc-rdns');
      const db = firstListed(await blackLookups, logFail);
      if (db) return verdict('dns-blacklist', { zone: db.zone, query: db.query, codes: db.codes, txt: db.txt }, db.txt);
      const hb = firstListed(await rhsBlackLookups, logFail);
      if (hb) return verdict('rhs-blacklist', { zone: hb.zone, query: hb.query, codes: hb.codes, txt: hb.txt });

      if (o.s25r.enabled && fc && fc.kind !== 'failed') {
        // An unconfirmed name is anyone's to choose: S25R treats it as no name (rule 0), as Postfix's "unknown".
        const rule = s25rMatch(confirmed);
        if (rule !== undefined) {
          const excused =
            (await s25rIpWhite.match(ip)) ?? (confirmed ? ((await s25rRdnsWhite.match(confirmed)) ?? s25rPatterns.find((p) => p.test(confirmed))?.source) : undefined);
          if (excused) log.debug({ conn: conn.id, ip, ptr, s25r: rule, entry: excused }, 'spamdyke: S25R match excused by its whitelist');
          else if (o.taRgrey.enabled) return { s25r: rule, ptr };
          else return verdict('s25r', { s25r: rule, names: fc.kind === 'unconfirmed' ? fc.names : undefined });
        }
      }
      return { ptr };
    };

    const evaluate = async (conn: Connection, signal: AbortSignal): Promise<ConnectionVerdict> => {
      const v = await decide(conn, signal);
      if (!v.refusal || v.ptr !== undefined || needPtr) return v;
      // The decision log names the client's PTR even when no rule needed it (looked up only for a refusal).
      const p = await services.dns.ptr(normalizeIp(conn.remoteIp), { signal }).catch(() => undefined);
      const ptr = p?.kind === 'found' ? p.records[0] : undefined;
      return ptr === undefined ? v : { ...v, ptr, refusal: { ...v.refusal, detail: { ...v.refusal.detail, ptr } } };
    };

    const verdicts = new Map<string, Promise<ConnectionVerdict>>();
    const closed = new Set<string>();
    const verdictFor = (conn: Connection): Promise<ConnectionVerdict> => {
      let v = verdicts.get(conn.id);
      if (!v) {
        const gone = new AbortController();
        v = evaluate(conn, gone.signal)
          .then((r) => {
            if (r.trustedBy) {
              conn.state.trusted = true;
              log.info({ conn: conn.id, ip: normalizeIp(conn.remoteIp), ptr: r.ptr, whitelist: r.trustedBy }, 'spamdyke: whitelisted client');
            }
            return r;
          })
          .catch((err: Error) => {
            log.error({ conn: conn.id, err: err.message }, 'spamdyke: connection checks failed, client not filtered (fail open)');
            return {};
          });
        verdicts.set(conn.id, v);
        conn.onClose(() => {
          verdicts.delete(conn.id);
          gone.abort();
          closed.add(conn.id);
          setTimeout(() => closed.delete(conn.id), 60_000).unref();
        });
      }
      return v;
    };

    /** `signal`: the MAIL hook's (a transaction refused at MAIL is not kept, so nobody awaits an abandoned check). */
    const senderChecks = async (sender: { address: string; domain: string }, signal: AbortSignal): Promise<Refusal | undefined> => {
      const sb = await senderBlack.match(sender.address);
      if (sb) return { rule: 'sender-blacklist', detail: { entry: sb, sender: sender.address } };
      const rbZones = await rhsBlack.zones();
      if (rbZones.length) {
        const hb = firstListed(await rhsblAll(rbZones, [sender.domain], signal), (r) => log.warn({ zone: r.zone, query: r.query, error: r.error }, 'spamdyke: RHSBL lookup failed (fail open)'));
        if (hb) return { rule: 'rhs-blacklist', detail: { zone: hb.zone, query: hb.query, codes: hb.codes, txt: hb.txt, sender: sender.address } };
      }
      if (o.rejectSender.includes('no-mx')) return noMx(sender.domain, signal);
      return undefined;
    };

    /** No MX and no A/AAAA fallback (or a null MX) is "no MX"; any DNS failure is not. */
    const noMx = async (domain: string, signal: AbortSignal): Promise<Refusal | undefined> => {
      if (!domain) return undefined;
      const mx = await services.dns.mx(domain, { signal });
      if (mx.kind === 'found') {
        if (mx.records.every((r) => r.exchange === '' || r.exchange === '.')) return { rule: 'sender-no-mx', detail: { domain, mx: 'null MX (RFC 7505)' } };
        return undefined;
      }
      if (mx.kind === 'failed') {
        log.warn({ domain, error: mx.error }, 'spamdyke: sender MX lookup failed, not treated as "no MX" (fail open)');
        return undefined;
      }
      const [a, aaaa] = await Promise.all([services.dns.a(domain, { signal }), services.dns.aaaa(domain, { signal })]);
      if (a.kind === 'found' || aaaa.kind === 'found') return undefined;
      if (a.kind === 'failed' || aaaa.kind === 'failed') {
        log.warn({ domain, error: a.kind === 'failed' ? a.error : aaaa.kind === 'failed' ? aaaa.error : '' }, 'spamdyke: sender A lookup failed, not treated as "no MX" (fail open)');
        return undefined;
      }
      return { rule: 'sender-no-mx', detail: { domain, mx: mx.reason, a: a.reason } };
    };

    return {
      hooks: {
        async connect({ connection }) {
          // Timeouts hold for everyone, trusted or not: they protect the server, not the mailboxes.
          if (o.idleTimeoutSecs > 0 || o.connectionTimeoutSecs > 0) {
            connection.limitTime({ idle: o.idleTimeoutSecs * 1000 || undefined, total: o.connectionTimeoutSecs * 1000 || undefined });
          }
          if (exempt(connection)) return answer.continue();
          // The IP whitelist is decided at once, so later plugins of this hook see `trusted`.
          const ip = normalizeIp(connection.remoteIp);
          const white = await ipWhite.match(ip);
          if (white) {
            connection.state.trusted = true;
            log.info({ conn: connection.id, ip, whitelist: `ip-whitelist ${white}` }, 'spamdyke: whitelisted client');
            return answer.continue();
          }
          // Start the DNS work now; the answer is given at RCPT.
          void verdictFor(connection);
          // greeting-delay-secs: the greeting waits; a client that talks meanwhile is
          // refused by the core (554 "not following the SMTP protocol").
          if (o.greetingDelaySecs > 0) await new Promise((r) => setTimeout(r, o.greetingDelaySecs * 1000));
          return answer.continue();
        },
        async mail({ connection, transaction, sender, signal }) {
          const info: TxInfo = {};
          transaction.state.spamdyke = info;
          if (exempt(connection) || !sender) return answer.continue();
          const sw = await senderWhite.match(sender.address);
          if (sw) {
            info.senderWhitelisted = `sender-whitelist ${sw}`;
          } else {
            const rwZones = await rhsWhite.zones();
            const hw = rwZones.length ? firstListed(await rhsblAll(rwZones, [sender.domain], signal), () => undefined) : undefined;
            if (hw) info.senderWhitelisted = `rhs-whitelist ${hw.zone} ${hw.query}`;
          }
          if (info.senderWhitelisted) log.info({ conn: connection.id, sender: sender.address, whitelist: info.senderWhitelisted }, 'spamdyke: whitelisted sender');
          else {
            info.senderRefusal = senderChecks(sender, signal).catch((err: Error) => {
              log.error({ conn: connection.id, err: err.message }, 'spamdyke: sender checks failed (fail open)');
              return undefined;
            });
          }
          return answer.continue();
        },
        async rcpt({ connection, transaction, recipient, signal }) {
          if (exempt(connection)) return answer.continue();
          const v = await verdictFor(connection);
          if (v.trustedBy || exempt(connection)) return answer.continue();
          const info = (transaction.state.spamdyke ??= {});
          if (info.senderWhitelisted) return answer.continue();
          const sender = transaction.sender?.address ?? '';
          const extra = { sender, rcpt: recipient.address };
          const rw = await rcptWhite.match(recipient.address);
          if (rw) {
            log.info({ conn: connection.id, ...extra, whitelist: `recipient-whitelist ${rw}` }, 'spamdyke: whitelisted recipient');
            return answer.continue();
          }
          if (v.refusal) return refuse(connection, v.refusal, extra);
          const rb = await rcptBlack.match(recipient.address);
          if (rb) return refuse(connection, { rule: 'recipient-blacklist', detail: { entry: rb, ptr: v.ptr } }, extra);
          const sr = await info.senderRefusal;
          if (sr) return refuse(connection, { ...sr, detail: { ptr: v.ptr, ...sr.detail } }, extra);
          if (o.maxRecipients > 0 && transaction.recipients.length >= o.maxRecipients) {
            return refuse(connection, { rule: 'max-recipients', detail: { max: o.maxRecipients, ptr: v.ptr } }, extra);
          }
          const tarGrey = o.taRgrey.enabled && v.s25r !== undefined;
          if (!o.graylist.enabled && !tarGrey) return answer.continue();
          if (!transaction.sender) {
            // Bounces are delayed after DATA, so sender-verification callouts still work.
            info.nullSenderGreylist = true;
            return answer.continue();
          }
          const ip = normalizeIp(connection.remoteIp);
          const g = await gl().check({ ip, sender: sender.toLowerCase(), recipient: recipient.address.toLowerCase() }, { signal });
          if (g.kind === 'pass') return answer.continue();
          if (tarGrey && o.taRgrey.tarpit > 0) {
            // taRgrey: a real MTA waits out the tarpit and is accepted; a bot that hangs up retries into the greylist.
            await sleep(o.taRgrey.tarpit * 1000);
            if (!closed.has(connection.id)) {
              log.info({ conn: connection.id, ip, ptr: v.ptr, s25r: v.s25r, ...extra, tarpit: o.taRgrey.tarpit }, 'spamdyke: S25R client waited out the tarpit, accepted');
              return answer.continue();
            }
          }
          return refuse(connection, { rule: 'graylist', detail: { ptr: v.ptr, s25r: v.s25r, reason: g.reason, retryInMs: g.retryInMs } }, extra);
        },
        async data({ connection, transaction, signal }) {
          const info = transaction.state.spamdyke;
          if (!info?.nullSenderGreylist || exempt(connection)) return answer.continue();
          const ip = normalizeIp(connection.remoteIp);
          for (const r of transaction.recipients) {
            const g = await gl().check({ ip, sender: '', recipient: r.address.toLowerCase() }, { signal });
            if (g.kind === 'defer') {
              return refuse(connection, { rule: 'graylist', detail: { reason: g.reason, retryInMs: g.retryInMs, sender: '<>' } }, { sender: '', rcpt: r.address });
            }
          }
          return answer.continue();
        },
      },
    };
  },
});

export type { SpamdykeOptions };
