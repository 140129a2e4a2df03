/**
 * What a sender asked for with DSN (RFC 3461), read from the parameters the
 * spool keeps with the envelope: RET and ENVID on MAIL, NOTIFY and ORCPT on
 * each RCPT. smtp-server has checked their syntax when they arrived and
 * decoded their xtext (ENVID, ORCPT are kept decoded; nodemailer encodes them
 * again for the next hop, and a report shows them as they are); mail
 * injected by yubin itself (bounces, sendmail, forwards) has none, which
 * means "the default": a bounce on failure, a delay notice if the site sends
 * them, no success notice.
 */
import type { Envelope, EnvelopeAddress } from './spool.js';

type Params = Readonly<Record<string, string | true>>;

export type NotifyWhen = 'SUCCESS' | 'FAILURE' | 'DELAY';

/** A recipient's NOTIFY: undefined when the client gave none (RFC 3461 4.1: the default applies). */
export function notifyOf(params: Params | undefined): ReadonlySet<NotifyWhen | 'NEVER'> | undefined {
  const v = params?.NOTIFY;
  if (typeof v !== 'string') return undefined;
  return new Set(v.toUpperCase().split(',') as Array<NotifyWhen | 'NEVER'>);
}

/** A failure is reported unless NOTIFY was given without FAILURE (NEVER, or SUCCESS/DELAY only). */
export function wantsFailureNotice(params: Params | undefined): boolean {
  const n = notifyOf(params);
  return !n || n.has('FAILURE');
}

export function wantsSuccessNotice(params: Params | undefined): boolean {
  return notifyOf(params)?.has('SUCCESS') ?? false;
}

/**
 * How long a recipient waits before a delay notice: the site's delayWarning
 * when the client said nothing, delayWarning or `asked` when it said DELAY,
 * never when it gave NOTIFY without DELAY.
 */
export function delayNoticeAfter(params: Params | undefined, delayWarning: number | undefined, asked: number): number | undefined {
  const n = notifyOf(params);
  if (!n) return delayWarning;
  return n.has('DELAY') ? (delayWarning ?? asked) : undefined;
}

/** RET=FULL: the whole message goes back in a failure notice (otherwise its headers). */
export function returnsFullMessage(senderParams: Params | undefined): boolean {
  return typeof senderParams?.RET === 'string' && senderParams.RET.toUpperCase() === 'FULL';
}

/** RFC 3464's Original-Envelope-Id value, if the client gave ENVID. */
export function envelopeIdOf(senderParams: Params | undefined): string | undefined {
  const v = senderParams?.ENVID;
  return typeof v === 'string' ? v : undefined;
}

/** RFC 3464's Original-Recipient value (`rfc822;addr`), if the client gave ORCPT. */
export function originalRecipientOf(params: Params | undefined): string | undefined {
  const v = params?.ORCPT;
  return typeof v === 'string' ? v : undefined;
}

const byEnvelope = new WeakMap<readonly EnvelopeAddress[], Map<string, Params>>();

/** One recipient's parameters, looked up through a map made once per envelope (a message may have hundreds). */
export function recipientParams(recipients: readonly EnvelopeAddress[], address: string): Params | undefined {
  let map = byEnvelope.get(recipients);
  if (!map) byEnvelope.set(recipients, (map = new Map(recipients.map((r) => [r.address, r.params]))));
  return map.get(address);
}

/** What to pass on to a DSN-capable next hop for one recipient. */
export interface RecipientDsn {
  readonly notify?: readonly string[];
  readonly orcpt?: string;
}

export function recipientDsnOf(params: Params | undefined): RecipientDsn {
  const out: { notify?: string[]; orcpt?: string } = {};
  if (typeof params?.NOTIFY === 'string') out.notify = params.NOTIFY.toUpperCase().split(',');
  const orcpt = originalRecipientOf(params);
  if (orcpt) out.orcpt = orcpt;
  return out;
}

/** The envelope carries a DSN request: RET or ENVID on MAIL, NOTIFY or ORCPT on some RCPT. */
export function hasDsn(env: Pick<Envelope, 'senderParams' | 'recipients'>): boolean {
  const p = env.senderParams;
  return p.RET !== undefined || p.ENVID !== undefined || env.recipients.some((r) => r.params.NOTIFY !== undefined || r.params.ORCPT !== undefined);
}

/** RET and ENVID to pass on. */
export function senderDsnOf(params: Params): { ret?: string; envid?: string } {
  const out: { ret?: string; envid?: string } = {};
  if (typeof params.RET === 'string') out.ret = params.RET.toUpperCase();
  const envid = envelopeIdOf(params);
  if (envid !== undefined) out.envid = envid;
  return out;
}
