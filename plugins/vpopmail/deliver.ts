/**
 * vdelivermail: one queued recipient of a virtual domain becomes a file in a
 * Maildir, a forward through the queue, or a bounce. Loops are caught by our
 * own Delivered-To line, quotas by Maildir++'s maildirsize, and mail flagged
 * as spam is filed into the spam folder where the user or domain wants it.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { answer, deliverToMaildir, LoopDetected, readHeaderSection, type Delivery, type HookAnswers } from '../../core/index.js';
import { maildirOf } from './names.js';
import type { VpopmailOptions } from './options.js';
import { checkQuota, parseQuota, recordDelivery } from './quota.js';
import { resolveAddress } from './resolve.js';
import type { DomainRecord, MailStore, UserRecord } from './store.js';

type DeliverAnswer = HookAnswers['deliver'];

const NO_MAILBOX = answer.reject(550, '5.1.1', 'Sorry, no mailbox here by that name. (#5.1.1)');
const LOOPING = answer.reject(554, '5.4.6', 'This message is looping: it already has my Delivered-To line. (#5.4.6)');

export interface DeliverEnv {
  readonly store: MailStore;
  readonly root: string;
  readonly options: VpopmailOptions;
  readonly log: Logger;
}

/** Header lines of the queued message, unfolded, as `name: value` with the name lower-cased. */
async function headerLines(delivery: Delivery): Promise<string[]> {
  const text = await readHeaderSection(delivery.message.stream());
  return text
    .replace(/\r\n[ \t]+/g, ' ')
    .split('\r\n')
    .filter(Boolean)
    .map((line) => {
      const colon = line.indexOf(':');
      return colon < 0 ? line.toLowerCase() : `${line.slice(0, colon).trim().toLowerCase()}: ${line.slice(colon + 1).trim()}`;
    });
}

export async function deliver(env: DeliverEnv, delivery: Delivery): Promise<DeliverAnswer> {
  const { store } = env;
  const rcpt = delivery.recipient;
  const domain = await store.getDomain(rcpt.domain);
  if (!domain) return answer.continue(); // not a virtual domain of ours: another plugin's
  const local = rcpt.local.toLowerCase();
  const resolution = await resolveAddress(store, domain, local);
  const self = `${local}@${domain.name}`;

  if (resolution.kind === 'alias') {
    const lines = await headerLines(delivery);
    if (lines.includes(`delivered-to: ${self}`)) return LOOPING;
    // An alias that lists its own address keeps a copy in that user's mailbox (valias's "./Maildir/" line).
    const others = resolution.alias.targets.filter((t) => t.toLowerCase() !== self);
    const keepCopy = others.length < resolution.alias.targets.length && resolution.user;
    if (others.length) await delivery.forward(others, [`Delivered-To: ${self}`]);
    if (keepCopy) {
      const stored = await deliverUser(env, domain, resolution.user!, delivery, lines);
      if (stored.action !== 'accept') return stored;
    }
    return answer.accept(`forwarded to ${others.join(', ') || '(nobody)'}${keepCopy ? ' and kept a copy' : ''}`);
  }

  if (resolution.kind === 'user') return deliverUser(env, domain, resolution.user, delivery);

  const c = resolution.catchall;
  if (c.kind === 'delete') return answer.accept('no such mailbox: deleted, as the domain\'s catch-all says');
  if (c.kind === 'bounce-no-mailbox') return NO_MAILBOX;
  const lines = await headerLines(delivery);
  if (lines.includes(`delivered-to: ${self}`)) return LOOPING;
  await delivery.forward([c.address], [`Delivered-To: ${self}`]);
  return answer.accept(`forwarded to the catch-all ${c.address}`);
}

async function deliverUser(env: DeliverEnv, domain: DomainRecord, user: UserRecord, delivery: Delivery, knownLines?: string[]): Promise<DeliverAnswer> {
  if (user.flags.bounceMail) return answer.reject(550, '5.2.1', 'This mailbox does not take mail. (#5.2.1)');
  const address = `${user.name}@${domain.name}`;
  const maildir = maildirOf(env.root, user);
  const quota = parseQuota(user.quota) ?? {};
  // Return-Path and Delivered-To are added here: the quota counts them too.
  const deliveredTo = `Delivered-To: ${address}`;
  const topLines = [`Return-Path: <${delivery.sender?.address ?? ''}>`, deliveredTo];
  const incoming = delivery.message.size + topLines.join('\n').length + 1;
  const check = await checkQuota(maildir, quota, incoming);
  if (check.over) {
    env.log.info({ queueId: delivery.queueId, rcpt: address, quota: user.quota, usage: check.usage }, 'over quota: bouncing');
    return answer.reject(552, '5.2.2', `${address} is over quota. (#5.2.2)`);
  }
  let dir = maildir;
  const filing = user.spamFiling ?? domain.spamFiling;
  if (filing) {
    const lines = knownLines ?? (await headerLines(delivery));
    if (lines.some((l) => l.toLowerCase() === 'x-spam-flag: yes')) {
      dir = path.join(maildir, env.options.spamFolder);
    }
  }
  try {
    const name = await deliverToMaildir(dir, { topLines, message: delivery.message, loopLine: deliveredTo });
    if (dir !== maildir) await markFolder(dir);
    const stored = Number(/,S=(\d+)/.exec(name)?.[1] ?? incoming);
    await recordDelivery(maildir, quota, stored);
    return answer.accept(`delivered to ${path.relative(env.root, path.join(dir, 'new', name))}`);
  } catch (err) {
    if (err instanceof LoopDetected) return LOOPING;
    env.log.warn({ queueId: delivery.queueId, rcpt: address, err: (err as Error).message }, 'maildir delivery failed');
    return answer.defer(451, '4.3.0', 'Temporary error on maildir delivery. (#4.3.0)');
  }
}

/** Maildir++ marks a folder with an empty `maildirfolder` file; IMAP servers and quota counting look for it. */
async function markFolder(dir: string): Promise<void> {
  await writeFile(path.join(dir, 'maildirfolder'), '', { flag: 'a', mode: 0o600 });
}
