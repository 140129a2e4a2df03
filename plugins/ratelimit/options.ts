/** The ratelimit plugin's options: one limit per thing counted, who is not counted, and what a store failure means. */
import { z } from 'zod';
import { parseDuration } from '../../core/index.js';

const window = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined || ms < 1000) {
    ctx.addIssue({ code: 'custom', message: `not a window: ${JSON.stringify(v)} (seconds, or a number with s, m, h or d; at least 1s)` });
    return z.NEVER;
  }
  return ms;
});

/** `{ limit: 10, window: 1m }`: at most `limit` messages in a window that starts with the first one counted. */
const limit = z.strictObject({
  limit: z.number().int().positive(),
  window,
});

export const EXEMPTIONS = ['authenticated', 'relayclient', 'trusted'] as const;
export type Exemption = (typeof EXEMPTIONS)[number];

export const options = z
  .strictObject({
    /** Per envelope sender (lower-cased); the null sender `<>` (bounces) is not counted here. */
    sender: limit.optional(),
    /** Per client IP. */
    ip: limit.optional(),
    /** Per authenticated user (SMTP AUTH): a stolen password sends no more than this. */
    user: limit.optional(),
    /** Clients not counted at all: authenticated ones, RELAYCLIENT (tcprules), whitelisted (connection.state.trusted). */
    exempt: z.array(z.enum(EXEMPTIONS)).default([]),
    /** The store does not answer: accept the message uncounted (default), or defer it (451 4.3.0). */
    onStoreFailure: z.enum(['accept', 'defer']).default('accept'),
  })
  .refine((o) => o.sender !== undefined || o.ip !== undefined || o.user !== undefined, { message: 'give at least one of sender, ip and user, e.g. sender: { limit: 10, window: 1m }' });

export type RateLimitOptions = z.output<typeof options>;
export type Limit = z.output<typeof limit>;
