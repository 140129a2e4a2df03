/**
 * yubin's public API: what plugin authors import.
 *
 *     import { definePlugin, answer } from 'yubin-mail';
 */
export { answer, formatReply, type Accept, type Action, type Answer, type Continue, type Defer, type Discard, type Disconnect, type EnhancedCode, type FinalAnswer, type PermanentCode, type Reject, type Reply, type SuccessCode, type TemporaryCode } from './answers.js';
export type {
  Address,
  AuthContext,
  Connection,
  ConnectContext,
  ConnectionState,
  DataContext,
  DeliverContext,
  Delivery,
  DeliveryMessage,
  Header,
  HeloContext,
  HookAnswers,
  HookContextBase,
  HookContexts,
  HookFunction,
  HookInput,
  HookName,
  Hooks,
  MailContext,
  Message,
  NewMessage,
  QueueContext,
  RcptContext,
  Recipient,
  SmtpParams,
  Transaction,
  TransactionState,
  VerifyContext,
} from './hooks.js';
export { HOOK_NAMES } from './hooks.js';
export { abortReason, timeoutReason, type AbortOptions } from './abort.js';
export { CommandError, definePlugin, type OptionsIssue, type OptionsSchema, type PluginCommandContext, type PluginDefinition, type PluginEnv, type PluginInstance, type HttpService, type HttpListenerInfo } from './plugin.js';
export {
  ABORTED,
  DEFAULT_LOGIN_THROTTLE,
  forwardConfirm,
  isAborted,
  LocalDomains,
  LoginThrottle,
  loginTurn,
  lookupDnsbl,
  lookupRhsbl,
  ManualClock,
  MemoryStore,
  NodeDns,
  reverseIp,
  SystemClock,
  Tokens,
  type Clock,
  type Dns,
  type DnsblOptions,
  type DnsblResult,
  type Fcrdns,
  type KeyValueStore,
  type LocalDomainSource,
  type LoginThrottleConfig,
  type Lookup,
  type MxRecord,
  type Services,
  type LoginTicket,
  type ThrottledBy,
  type ThrottleVerdict,
} from './services/index.js';
export { domainMatches, hasSenderRouting, splitAddress } from './address.js';
export { ConfigError, loadConfig, parseConfig, type LoadedConfig } from './config/load.js';
export { commandOptions, mergeOptions } from './config/plugin-options.js';
export type { AnyListenerConfig, Config, HttpListenerConfig, Limits, ListenerConfig, PluginUse } from './config/schema.js';
export { YubinServer, type StartOptions } from './server.js';
export { createLogger, type Logger, type LoggerOptions } from './logger.js';
export { clientNetwork, ipMatcher, normalizeIp, type IpMatcher } from './ip.js';
export { controlLines, WatchedFile, type WatchedFileOptions } from './watched-file.js';
export { deliverToMaildir, ensureMaildir, LoopDetected, maildirName, type MaildirDelivery } from './maildir.js';
export { Spool, type Envelope, type EnvelopeAddress, type MessageKind, type QueueState, type RecipientState, type RecipientStatus } from './queue/spool.js';
export { controlRequest, type ControlRequest, type ControlResponse } from './queue/control.js';
export { queueEntries, type QueueEntry, type QueuedRecipient } from './queue/inspect.js';
export { lastRefusals, refusals, why, type Refusal } from './journal/why.js';
export { parseDuration } from './config/units.js';
export { timeFromName } from './pop3/maildir-box.js';
export { migrateSchema, StatementCache } from './sqlite-schema.js';
export type { Scheduler } from './queue/scheduler.js';
export { readHeaderSection } from './queue/bounce.js';
