/**
 * spamdyke plugin options. Names follow spamdyke 5.0.1 in camelCase; the
 * spamdyke option each one stands for is in the comment next to it.
 */
import { z } from 'zod';

const list = z.array(z.string().min(1)).default([]);
const file = z.string().min(1).optional();

/** Rules a refusal can come from; the keys of `replies` (spamdyke: rejection-text-<name>). */
export const RULES = [
  'ip-blacklist',
  'rdns-blacklist',
  'empty-rdns',
  'unresolvable-rdns',
  'ip-in-cc-rdns',
  'dns-blacklist',
  'rhs-blacklist',
  's25r',
  'sender-blacklist',
  'recipient-blacklist',
  'sender-no-mx',
  'max-recipients',
  'graylist',
] as const;
export type Rule = (typeof RULES)[number];

const reply = z
  .strictObject({
    /** 4xx: temporary (defer), 5xx: permanent (reject). 421 is not allowed: it would close the connection. */
    code: z.number().int().optional(),
    enhanced: z.string().regex(/^[45]\.\d{1,3}\.\d{1,3}$/).optional(),
    /** `{zone}` is replaced with the list's zone where there is one. */
    text: z.string().min(1).optional(),
  })
  .refine((r) => r.code === undefined || [450, 451, 452, 454, 455, 550, 551, 552, 553, 554, 556].includes(r.code), {
    message: 'code must be one of 450, 451, 452, 454, 455, 550-554, 556',
  })
  .refine((r) => r.code === undefined || r.enhanced === undefined || r.enhanced[0] === String(r.code)[0], {
    message: 'enhanced status code class must match the code',
  });

export const graylistOptions = z.strictObject({
  /** spamdyke graylist-level: off unless enabled (spamdyke's `always` when on). */
  enabled: z.boolean().default(false),
  /** spamdyke keys on (sender, recipient); 'triplet' adds the client IP (Harris). */
  key: z.enum(['sender-recipient', 'triplet']).default('sender-recipient'),
  /** spamdyke graylist-min-secs: seconds before a retry is accepted. */
  minDelay: z.number().nonnegative().default(300),
  /** spamdyke graylist-max-secs: seconds after which an unconfirmed entry counts as new. */
  retryWindow: z.number().positive().default(2 * 86_400),
  /** Seconds a pair that passed stays whitelisted (refreshed by every accepted message). */
  whitelistLifetime: z.number().positive().default(36 * 86_400),
});

export const options = z.strictObject({
  /** dns-blacklist-entry: DNSBL zones the client IP is looked up in. */
  dnsBlacklistEntry: list,
  /** dns-blacklist-file */
  dnsBlacklistFile: file,
  /** dns-whitelist-entry: a listed client bypasses every filter. */
  dnsWhitelistEntry: list,
  /** dns-whitelist-file */
  dnsWhitelistFile: file,
  /** rhs-blacklist-entry: RHSBL zones for the rDNS name's domain and the sender's domain. */
  rhsBlacklistEntry: list,
  /** rhs-blacklist-file */
  rhsBlacklistFile: file,
  /** rhs-whitelist-entry: a listed rDNS domain bypasses every filter (a listed sender domain, the transaction's). */
  rhsWhitelistEntry: list,
  /** rhs-whitelist-file */
  rhsWhitelistFile: file,

  /** reject-empty-rdns */
  rejectEmptyRdns: z.boolean().default(false),
  /** reject-unresolvable-rdns (forward-confirmed rDNS; a DNS failure is not "unresolvable") */
  rejectUnresolvableRdns: z.boolean().default(false),
  /** reject-ip-in-cc-rdns */
  rejectIpInCcRdns: z.boolean().default(false),
  /** reject-sender: only `no-mx` here (4.x reject-missing-sender-mx). */
  rejectSender: z.array(z.enum(['no-mx'])).default([]),

  /** ip-blacklist-entry / ip-blacklist-file */
  ipBlacklistEntry: list,
  ipBlacklistFile: file,
  /** ip-whitelist-entry / ip-whitelist-file: bypass every filter (connection.state.trusted). */
  ipWhitelistEntry: list,
  ipWhitelistFile: file,
  /** rdns-blacklist-entry / rdns-blacklist-file */
  rdnsBlacklistEntry: list,
  rdnsBlacklistFile: file,
  /** rdns-whitelist-entry / rdns-whitelist-file (forward-confirmed names only). */
  rdnsWhitelistEntry: list,
  rdnsWhitelistFile: file,
  /** sender-blacklist-entry / sender-blacklist-file */
  senderBlacklistEntry: list,
  senderBlacklistFile: file,
  /** sender-whitelist-entry / sender-whitelist-file: the transaction bypasses every filter. */
  senderWhitelistEntry: list,
  senderWhitelistFile: file,
  /** recipient-blacklist-entry / recipient-blacklist-file */
  recipientBlacklistEntry: list,
  recipientBlacklistFile: file,
  /** recipient-whitelist-entry / recipient-whitelist-file: that recipient bypasses every filter. */
  recipientWhitelistEntry: list,
  recipientWhitelistFile: file,

  /**
   * greeting-delay-secs: hold the greeting back this long; a client that sends
   * anything first is an early talker and the core refuses it with 554. Keep it
   * below hookTimeout (30 s by default).
   */
  greetingDelaySecs: z.number().min(0).max(25).default(0),
  /** idle-timeout-secs: silence allowed between commands (lowers the listener's idleTimeout); 0 = the listener's. */
  idleTimeoutSecs: z.number().min(0).default(0),
  /** connection-timeout-secs: the longest a connection may last; 0 = no limit beyond the listener's. */
  connectionTimeoutSecs: z.number().min(0).default(0),

  /** max-recipients: 0 = no limit. */
  maxRecipients: z.number().int().nonnegative().default(0),

  /** S25R (not in spamdyke): refuse clients with generic rDNS names, temporary code. */
  s25r: z
    .strictObject({
      enabled: z.boolean().default(false),
      /** Client IPs S25R never applies to (spamdyke IP file syntax). */
      ipWhitelist: list,
      ipWhitelistFile: file,
      /** rDNS names S25R never applies to: exact or `.domain` (forward-confirmed names only). */
      rdnsWhitelist: list,
      rdnsWhitelistFile: file,
      /** Regexes (case-insensitive) on the forward-confirmed rDNS name, e.g. `^mail-.*\\.google\\.com$`. */
      rdnsWhitelistPattern: list,
    })
    .default(() => ({ enabled: false, ipWhitelist: [], rdnsWhitelist: [], rdnsWhitelistPattern: [] })),
  /**
   * taRgrey: S25R matches are greylisted instead of refused; `tarpit` seconds
   * of delay before the RCPT answer, and a client that waits it out passes.
   */
  taRgrey: z
    .strictObject({
      enabled: z.boolean().default(false),
      tarpit: z.number().nonnegative().default(0),
    })
    .default(() => ({ enabled: false, tarpit: 0 })),

  /** graylist-level / graylist-min-secs / graylist-max-secs. */
  graylist: graylistOptions.default(() => graylistOptions.parse({})),

  /** rejection-text-<rule>: code, enhanced code and text per rule. */
  replies: z.partialRecord(z.enum(RULES), reply).default({}),

  /** Seconds between checks of the list files for changes. */
  checkInterval: z.number().positive().default(1),
});

export type SpamdykeOptions = z.output<typeof options>;
