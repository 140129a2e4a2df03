/**
 * rblsmtpd: ucspi-tcp's DNS blocklist gate as a plugin. The lookups start at
 * connect (all zones in parallel) and the decision is given at RCPT, so MAIL
 * still gets 250 and the sending MTA records the refusal against each
 * recipient, as with rblsmtpd's fake session.
 *
 * Decision sources, as in rblsmtpd:
 * 1. RBLSMTPD from tcprules (connection.state.rblsmtpd): '' skips every
 *    lookup (no DNS query at all); `-text` refuses with 553 text; any other
 *    text refuses with 451 text.
 * 2. `zones`, in their order; the first that decides wins (the lookups run in
 *    parallel, the decision follows the order):
 *    - `"zone"` (-r): listed → refuse; the TXT record is the text.
 *    - `{ zone, allow: true }` (-a): listed → accept, skip the rest.
 *    - `{ zone, text }`: listed → refuse with this fixed text.
 * 3. `scoring` (postscreen-like, beyond rblsmtpd): weights of the zones that
 *    list the client (optionally only for some 127.x codes) are added up; a
 *    sum at or above `threshold` refuses. Negative weights make allow lists.
 *
 * 451 unless `permanent` (rblsmtpd -b: 553); any lookup failure seen on the
 * way forces 451. Failures are fail-open (a blocklist that does not answer
 * does not list, an allow list that does not answer allows, as rblsmtpd -C);
 * `failClosed` (-c) answers `451 temporary RBL lookup error` instead.
 *
 * Unlike rblsmtpd 0.88, a listing is an A record (RFC 5782): a zone that
 * publishes only A records blocks too, with a default text. The core's
 * enhanced status code (4.7.1 / 5.7.1) goes before the text.
 *
 * Skipped for trusted clients (whitelist), relay clients (RELAYCLIENT) and
 * authenticated sessions. List it after tcprules and whitelist, whose
 * connect hooks set what it reads.
 */
import { z } from 'zod';
import { answer, definePlugin, lookupDnsbl, normalizeIp, type Connection, type DnsblResult } from '../../core/index.js';
import { cleanText, fromVariable, parseCodeFilter, type CodeFilter } from './rules.js';

const zoneName = z
  .string()
  .min(1)
  .transform((z) => z.toLowerCase().replace(/\.$/, ''));

const codeFilter = z.string().refine((p) => typeof parseCodeFilter(p) !== 'string', { message: 'not a code filter like 127.0.0.[2..11]' });

const zoneEntry = z.union([zoneName, z.strictObject({ zone: zoneName, allow: z.literal(true) }), z.strictObject({ zone: zoneName, text: z.string().min(1) })]);

const options = z
  .strictObject({
    /** Checked in this order; the first that decides wins. */
    zones: z.array(zoneEntry).default([]),
    /** rblsmtpd -b: refuse listed clients with 553 instead of 451. */
    permanent: z.boolean().default(false),
    /** rblsmtpd -c: a blocklist lookup failure refuses with `451 temporary RBL lookup error`. */
    failClosed: z.boolean().default(false),
    /** Postscreen-like scoring over several zones, after `zones` decided nothing. */
    scoring: z
      .strictObject({
        threshold: z.number().positive(),
        zones: z.array(z.strictObject({ zone: zoneName, weight: z.number(), codes: codeFilter.optional() })).min(1),
      })
      .optional(),
    /** Zone → the text to answer with instead of its TXT or name (hides which list it was). */
    replyMap: z.record(z.string(), z.string().min(1)).default({}),
    /** Ask no list: refuse only clients whose tcp.smtp rule sets RBLSMTPD (rblsmtpd without -r). */
    rblsmtpdOnly: z.boolean().default(false),
  })
  // No zones and no scoring is rblsmtpd run without -r: only tcp.smtp's RBLSMTPD decides, which must be said.
  .refine((o) => o.zones.length > 0 || o.scoring !== undefined || o.rblsmtpdOnly, {
    message: 'give zones, scoring or both; or rblsmtpdOnly: true for tcp.smtp\'s RBLSMTPD alone (rblsmtpd without -r)',
  });

type Options = z.output<typeof options>;

export type Verdict =
  | { readonly kind: 'pass'; readonly reason: string }
  | {
      readonly kind: 'refuse';
      readonly code: 451 | 553;
      readonly text: string;
      /** What decided: RBLSMTPD, rbl, text, scoring, failClosed. */
      readonly rule: string;
      readonly zone?: string;
      readonly query?: string;
      readonly codes?: readonly string[];
      readonly txt?: string;
      readonly score?: number;
    };

const TEMPFAIL_TEXT = 'temporary RBL lookup error';

export default definePlugin({
  name: 'rblsmtpd',
  // Reads what tcprules (RELAYCLIENT, RBLSMTPD) and whitelist (trusted) set at connect.
  after: ['tcprules', 'whitelist'],
  options,
  setup({ options, log, services }) {
    const replyMap = new Map(Object.entries(options.replyMap).map(([k, v]) => [k.toLowerCase().replace(/\.$/, ''), v]));
    const scoring = options.scoring?.zones.map((z) => ({ ...z, filter: z.codes === undefined ? undefined : (parseCodeFilter(z.codes) as CodeFilter) }));
    const verdicts = new Map<string, Promise<Verdict>>();

    /** The client needs no check at all (asked at connect and again at RCPT). */
    const exempt = (c: Connection): string | undefined => {
      if (c.authUser !== undefined) return 'authenticated';
      if (c.state.trusted) return 'trusted';
      if (c.state.relayClient !== undefined) return 'relay client';
      return undefined;
    };

    const verdictFor = (c: Connection): Promise<Verdict> => {
      let v = verdicts.get(c.id);
      if (!v) {
        // The verdict is kept for the connection and may be awaited by a later hook than
        // the one that started it, so its lookups stop when the connection does, not when
        // one hook call runs out of time (an abandoned lookup counts as failed).
        const gone = new AbortController();
        v = decide(services.dns, options, replyMap, scoring, c, gone.signal).catch((err: Error): Verdict => {
          log.warn({ conn: c.id, err: err.message }, 'rblsmtpd check failed');
          return options.failClosed ? { kind: 'refuse', code: 451, text: TEMPFAIL_TEXT, rule: 'failClosed' } : { kind: 'pass', reason: 'error' };
        });
        verdicts.set(c.id, v);
        c.onClose(() => {
          verdicts.delete(c.id);
          gone.abort();
        });
      }
      return v;
    };
    const logged = new Set<string>();

    return {
      hooks: {
        connect({ connection }) {
          // Start early; the answer is needed at the first RCPT.
          if (exempt(connection) === undefined) void verdictFor(connection);
          return answer.continue();
        },
        async rcpt({ connection }) {
          if (exempt(connection) !== undefined) return answer.continue();
          const v = await verdictFor(connection);
          if (v.kind === 'pass') return answer.continue();
          if (!logged.has(connection.id)) {
            // One line per refused connection, with the DNS detail the core's own hook line lacks.
            logged.add(connection.id);
            connection.onClose(() => logged.delete(connection.id));
            log.info(
              { conn: connection.id, ip: normalizeIp(connection.remoteIp), rule: v.rule, zone: v.zone, query: v.query, codes: v.codes, txt: v.txt, score: v.score, code: v.code, text: v.text },
              `rblsmtpd: ${v.code} ${v.text}`,
            );
          }
          return v.code === 553 ? answer.reject(553, '5.7.1', v.text) : answer.defer(451, '4.7.1', v.text);
        },
      },
    };
  },
});

type ScoringZone = { zone: string; weight: number; filter: CodeFilter | undefined };

async function decide(
  dns: Parameters<typeof lookupDnsbl>[0],
  options: Options,
  replyMap: ReadonlyMap<string, string>,
  scoring: readonly ScoringZone[] | undefined,
  c: Connection,
  signal?: AbortSignal,
): Promise<Verdict> {
  const variable = c.state.rblsmtpd;
  if (variable !== undefined) {
    const v = fromVariable(variable);
    if (v.kind === 'skip') return { kind: 'pass', reason: 'RBLSMTPD=""' };
    return { kind: 'refuse', code: v.code, text: v.text, rule: 'RBLSMTPD' };
  }
  const ip = normalizeIp(c.remoteIp);

  // Every lookup starts now, in parallel; one per zone and kind (the TXT only where its text is used).
  const lookups = new Map<string, Promise<DnsblResult>>();
  const lookup = (zone: string, txt: boolean): Promise<DnsblResult> => {
    const key = `${txt ? 'txt' : 'a'} ${zone}`;
    let p = lookups.get(key);
    if (!p) {
      p = lookupDnsbl(dns, zone, ip, { txt, signal }).catch((err: Error): DnsblResult => ({ kind: 'failed', zone, query: zone, error: err.message }));
      lookups.set(key, p);
    }
    return p;
  };
  const ordered = options.zones.map((e) => {
    const entry = typeof e === 'string' ? { zone: e, rule: 'rbl' as const } : 'allow' in e ? { zone: e.zone, rule: 'allow' as const } : { zone: e.zone, rule: 'text' as const, text: e.text };
    const wantTxt = entry.rule === 'rbl' && !replyMap.has(entry.zone);
    return { ...entry, result: lookup(entry.zone, wantTxt) };
  });
  const scored = scoring?.map((s) => ({ ...s, result: lookup(s.zone, false) }));

  // rblsmtpd's flagmustnotbounce: after any temporary failure, never 553.
  let tempFailed = false;
  const code = (): 451 | 553 => (options.permanent && !tempFailed ? 553 : 451);

  for (const entry of ordered) {
    const r = await entry.result;
    if (r.kind === 'failed') {
      tempFailed = true;
      if (entry.rule === 'allow') {
        if (!options.failClosed) return { kind: 'pass', reason: `allow list ${entry.zone} failed (fail-open)` };
        continue;
      }
      if (options.failClosed) return { kind: 'refuse', code: 451, text: TEMPFAIL_TEXT, rule: 'failClosed', zone: entry.zone, query: r.query, txt: r.error };
      continue;
    }
    if (r.kind === 'unlisted') continue;
    if (entry.rule === 'allow') return { kind: 'pass', reason: `listed in allow list ${entry.zone}` };
    const text = replyMap.get(entry.zone) ?? ('text' in entry ? entry.text : undefined) ?? r.txt ?? `${ip} is listed in ${entry.zone}`;
    return { kind: 'refuse', code: code(), text: cleanText(text), rule: entry.rule, zone: entry.zone, query: r.query, codes: r.codes, txt: r.txt };
  }

  if (scored?.length) {
    const results = await Promise.all(scored.map(async (s) => ({ ...s, r: await s.result })));
    let score = 0;
    let top: { zone: string; weight: number; query: string; codes: readonly string[] } | undefined;
    const hits: string[] = [];
    let failedPositive: (typeof results)[number] | undefined;
    for (const s of results) {
      if (s.r.kind === 'failed') {
        tempFailed = true;
        if (s.weight > 0) failedPositive ??= s;
        continue;
      }
      if (s.r.kind !== 'listed') continue;
      const codes = s.filter ? s.r.codes.filter(s.filter) : s.r.codes;
      if (!codes.length) continue;
      score += s.weight;
      hits.push(...codes.map((c) => `${s.zone}=${c}`));
      if (s.weight > 0 && (!top || s.weight > top.weight)) top = { zone: s.zone, weight: s.weight, query: s.r.query, codes };
    }
    if (score >= options.scoring!.threshold && top) {
      const text = replyMap.get(top.zone) ?? `Service unavailable; client [${ip}] blocked using ${top.zone}`;
      return { kind: 'refuse', code: code(), text: cleanText(text), rule: 'scoring', zone: top.zone, query: top.query, codes: hits, score };
    }
    if (failedPositive && options.failClosed) {
      return { kind: 'refuse', code: 451, text: TEMPFAIL_TEXT, rule: 'failClosed', zone: failedPositive.zone, query: failedPositive.r.query, score };
    }
  }
  return { kind: 'pass', reason: 'not listed' };
}
