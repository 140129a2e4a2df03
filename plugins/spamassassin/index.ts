/**
 * spamassassin: asks SpamAssassin's spamd about each message at the end of
 * DATA (SYMBOLS over SPAMC/1.5, our own client in ./spamc.ts) and marks it
 * with the headers SpamAssassin would add:
 *
 *     X-Spam-Flag: YES                                   (spam only)
 *     X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE,...
 *     X-Spam-Level: ***                                  (one star per whole point, 50 at most)
 *
 * A mailbox plugin files flagged mail (vpopmail's spam filing puts
 * `X-Spam-Flag: YES` into Maildir/.Spam). With `rejectScore`, a score at or
 * above it is refused at DATA with 554 5.7.1 and spamd's score in the text.
 *
 * Messages above `maxSize` are not sent to spamd (logged, accepted
 * unmarked), as spamc's -s. When spamd is down, slow or answers an error:
 * `onError: accept` (default) accepts with `X-Spam-Status: Unchecked
 * (spamd unavailable)`, `defer` answers 451 4.7.1. Trusted clients
 * (whitelist) are skipped.
 *
 * Keep `timeout` below the server's hookTimeout (30 s by default), or the core
 * gives up on the hook first.
 */
import { z } from 'zod';
import { answer, definePlugin, type DataContext } from '../../core/index.js';
import { parseDuration, parseSize } from '../../core/config/units.js';
import { Spamc, SpamdError } from './spamc.js';

export { Spamc, SpamdError, parseResponse, parseSpamHeader, spamdRequest } from './spamc.js';
export type { SpamcCommand, SpamcInput, SpamcOptions, SpamcResponse, SpamcResult, SymbolsResult } from './spamc.js';

const duration = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined || ms <= 0) {
    ctx.addIssue({ code: 'custom', message: `not a duration: ${JSON.stringify(v)} (use seconds or a number with ms, s, m)` });
    return z.NEVER;
  }
  return ms;
});

const size = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const bytes = parseSize(v);
  if (bytes === undefined || bytes <= 0) {
    ctx.addIssue({ code: 'custom', message: `not a size: ${JSON.stringify(v)} (use bytes or a number with k or M)` });
    return z.NEVER;
  }
  return bytes;
});

const options = z
  .strictObject({
    /** spamd's TCP address. */
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(1).max(65535).default(783),
    /** spamd's Unix socket (--socketpath); wins over host and port. */
    socket: z.string().min(1).optional(),
    /** Whole exchange with spamd (seconds, or `25s`, `500ms`). */
    timeout: duration.default(25_000),
    connectTimeout: duration.default(5_000),
    /** Larger messages are not checked (spamc -s); `500k`, `2M` or bytes. */
    maxSize: size.default(500 * 1024),
    /** Score at or above which the message is refused with 554 5.7.1. */
    rejectScore: z.number().optional(),
    /** spamd user (User: header) whose preferences apply. */
    user: z.string().min(1).regex(/^[^\r\n]+$/).optional(),
    /** With exactly one recipient, that address is the spamd user (else `user`). */
    perRecipientUser: z.boolean().default(false),
    /** spamd unavailable: accept with an Unchecked header, or defer with 451 4.7.1. */
    onError: z.enum(['accept', 'defer']).default('accept'),
  })
  .refine((o) => o.connectTimeout <= o.timeout, { message: 'connectTimeout must not exceed timeout', path: ['connectTimeout'] });

/** `tests=` value folded so no header line runs much past 78 characters. */
export function statusValue(isSpam: boolean, score: number, required: number, tests: readonly string[]): string {
  let value = `${isSpam ? 'Yes' : 'No'}, score=${score.toFixed(1)} required=${required.toFixed(1)} tests=`;
  let line = 'X-Spam-Status: '.length + value.length;
  if (tests.length === 0) return value + 'none';
  tests.forEach((t, i) => {
    const piece = t + (i < tests.length - 1 ? ',' : '');
    if (i > 0 && line + piece.length > 78) {
      value += '\r\n\t';
      line = 8;
    }
    value += piece;
    line += piece.length;
  });
  return value;
}

export function levelValue(score: number): string {
  return '*'.repeat(Math.max(0, Math.min(50, Math.floor(score))));
}

async function readAll(ctx: DataContext, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of ctx.message.stream()) {
    const b = typeof c === 'string' ? Buffer.from(c) : (c as Buffer);
    total += b.length;
    if (total > limit) return undefined;
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

export default definePlugin({
  name: 'spamassassin',
  // Reads what tcprules (RELAYCLIENT, RBLSMTPD) and whitelist (trusted) set at connect.
  after: ['tcprules', 'whitelist'],
  options,
  setup({ options, log }) {
    const client = new Spamc({
      host: options.host,
      port: options.port,
      ...(options.socket ? { socket: options.socket } : {}),
      timeout: options.timeout,
      connectTimeout: options.connectTimeout,
    });
    const where = options.socket ? `unix:${options.socket}` : `${options.host}:${options.port}`;
    return {
      hooks: {
        async data(ctx) {
          const { connection, transaction, message } = ctx;
          const base = { conn: connection.id, queueId: transaction.id, size: message.size };
          if (connection.state.trusted) {
            log.info({ ...base, action: 'skipped', reason: 'trusted client' }, 'spamassassin: skipped');
            return answer.continue();
          }
          // What spamd sees is the message as queued: the headers plugins added, then what came in.
          if (message.size > options.maxSize) {
            log.info({ ...base, maxSize: options.maxSize, action: 'skipped', reason: 'too large' }, 'spamassassin: message larger than maxSize, not checked');
            return answer.continue();
          }
          const started = Date.now();
          const user = options.perRecipientUser && transaction.recipients.length === 1 ? transaction.recipients[0]!.address : options.user;
          let body: Buffer | undefined;
          try {
            // Buffered, so Content-length is exact (added headers included); bounded by maxSize plus a margin for them.
            body = await readAll(ctx, options.maxSize + 64 * 1024);
          } catch (err) {
            log.warn({ ...base, err: (err as Error).message }, 'spamassassin: could not read the message');
            return answer.defer(451, '4.3.0', 'temporary failure reading the message, try again later');
          }
          if (!body) {
            log.info({ ...base, maxSize: options.maxSize, action: 'skipped', reason: 'too large' }, 'spamassassin: message larger than maxSize, not checked');
            return answer.continue();
          }
          let result;
          try {
            result = await client.symbols(body, user, { signal: ctx.signal });
          } catch (err) {
            const e = err as Error;
            const elapsed = Date.now() - started;
            const kind = e instanceof SpamdError ? e.kind : 'error';
            if (options.onError === 'defer') {
              log.warn({ ...base, spamd: where, user, kind, err: e.message, action: 'defer', elapsed }, 'spamassassin: spamd unavailable, deferring');
              return answer.defer(451, '4.7.1', 'spam check temporarily unavailable, try again later');
            }
            log.warn({ ...base, spamd: where, user, kind, err: e.message, action: 'unchecked', elapsed }, 'spamassassin: spamd unavailable, accepting unchecked');
            message.addHeader('X-Spam-Status', 'Unchecked (spamd unavailable)');
            return answer.continue();
          }
          const elapsed = Date.now() - started;
          const { isSpam, score, threshold, symbols } = result;
          const refuse = options.rejectScore !== undefined && score >= options.rejectScore;
          const fields = { ...base, user, score, required: threshold, spam: isSpam, tests: symbols.join(','), elapsed };
          if (refuse) {
            log.info({ ...fields, action: 'reject' }, 'spamassassin: refused');
            return answer.reject(554, '5.7.1', `message refused as spam (score ${score.toFixed(1)}, limit ${options.rejectScore!.toFixed(1)})`);
          }
          if (isSpam) message.addHeader('X-Spam-Flag', 'YES');
          message.addHeader('X-Spam-Status', statusValue(isSpam, score, threshold, symbols));
          const level = levelValue(score);
          if (level) message.addHeader('X-Spam-Level', level);
          log.info({ ...fields, action: isSpam ? 'flag' : 'pass' }, 'spamassassin: checked');
          return answer.continue();
        },
      },
    };
  },
});
