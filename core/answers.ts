/**
 * Hook answers: what a plugin tells the core to do next.
 *
 * Every answer that ends a hook carries the SMTP reply the client will see
 * (code, enhanced status code, text), so a reply is always the plugin's own
 * words. The code types only admit codes that fit the action: a `reject`
 * cannot be written with a 4xx code, nor a `defer` with a 5xx one.
 */

/** Permanent failure codes a plugin may answer with (RFC 5321 section 4.2.3). */
export type PermanentCode = 500 | 501 | 502 | 503 | 504 | 521 | 530 | 535 | 538 | 550 | 551 | 552 | 553 | 554 | 555 | 556;
/** Temporary failure codes a plugin may answer with (421 is reserved for `disconnect`). */
export type TemporaryCode = 450 | 451 | 452 | 454 | 455;
/** Success codes an `accept` may carry. */
export type SuccessCode = 220 | 235 | 250 | 251 | 252;

/** RFC 3463 enhanced status code whose class matches the reply code's class. */
export type EnhancedCode<C extends 2 | 4 | 5> = `${C}.${number}.${number}`;

export interface Reply {
  readonly code: number;
  readonly enhanced: string;
  readonly text: string;
}

export interface Continue {
  readonly action: 'continue';
}
export interface Accept {
  readonly action: 'accept';
  readonly code: SuccessCode;
  readonly enhanced: EnhancedCode<2>;
  readonly text: string;
}
export interface Reject {
  readonly action: 'reject';
  readonly code: PermanentCode;
  readonly enhanced: EnhancedCode<5>;
  readonly text: string;
}
export interface Defer {
  readonly action: 'defer';
  readonly code: TemporaryCode;
  readonly enhanced: EnhancedCode<4>;
  readonly text: string;
}
export interface Disconnect {
  readonly action: 'disconnect';
  readonly code: 421;
  readonly enhanced: EnhancedCode<4>;
  readonly text: string;
  /** Close without writing anything, the way tcpserver drops a denied client. */
  readonly silent: boolean;
}
export interface Discard {
  readonly action: 'discard';
  readonly code: 250;
  readonly enhanced: EnhancedCode<2>;
  readonly text: string;
}

export type Answer = Continue | Accept | Reject | Defer | Disconnect | Discard;
export type Action = Answer['action'];
/** Answers that end a hook: everything but `continue`. */
export type FinalAnswer = Exclude<Answer, Continue>;

const CONTINUE: Continue = Object.freeze({ action: 'continue' });

/** Constructors for hook answers. `answer.continue()` passes to the next plugin. */
export const answer = {
  continue(): Continue {
    return CONTINUE;
  },
  /** Accept and skip the remaining plugins of this hook. */
  accept(text = 'OK', code: SuccessCode = 250, enhanced: EnhancedCode<2> = '2.0.0'): Accept {
    return { action: 'accept', code, enhanced, text };
  },
  reject(code: PermanentCode, enhanced: EnhancedCode<5>, text: string): Reject {
    return { action: 'reject', code, enhanced, text };
  },
  defer(code: TemporaryCode, enhanced: EnhancedCode<4>, text: string): Defer {
    return { action: 'defer', code, enhanced, text };
  },
  /** Reply 421 and close the connection; `silent` closes without a reply. */
  disconnect(text: string, enhanced: EnhancedCode<4> = '4.7.0', options: { silent?: boolean } = {}): Disconnect {
    return { action: 'disconnect', code: 421, enhanced, text, silent: options.silent ?? false };
  },
  /** Accept, then deliver nowhere (vpopmail's `delete`). */
  discard(text = 'OK', enhanced: EnhancedCode<2> = '2.0.0'): Discard {
    return { action: 'discard', code: 250, enhanced, text };
  },
} as const;

const CODE_RANGES: Record<Exclude<Action, 'continue'>, (code: number) => boolean> = {
  accept: (c) => c >= 200 && c < 300,
  discard: (c) => c === 250,
  reject: (c) => c >= 500 && c < 600,
  defer: (c) => c >= 400 && c < 500 && c !== 421,
  disconnect: (c) => c === 421,
};

/**
 * Checks an answer that came from plugin code at run time. TypeScript plugins
 * cannot build a wrong one, but plain JavaScript plugins can; a malformed
 * answer is a plugin fault and is treated like a throw (451, never an accept).
 */
export function validateAnswer(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return `expected an answer object, got ${value === null ? 'null' : typeof value}`;
  const a = value as Record<string, unknown>;
  if (a.action === 'continue') return undefined;
  const check = CODE_RANGES[a.action as keyof typeof CODE_RANGES];
  if (!check) return `unknown action ${JSON.stringify(a.action)}`;
  if (typeof a.code !== 'number' || !check(a.code)) return `code ${String(a.code)} does not fit action ${String(a.action)}`;
  if (typeof a.enhanced !== 'string' || !/^[245]\.\d{1,3}\.\d{1,3}$/.test(a.enhanced) || a.enhanced[0] !== String(a.code)[0]) {
    return `enhanced status code ${JSON.stringify(a.enhanced)} does not fit code ${a.code}`;
  }
  if (typeof a.text !== 'string') return 'text must be a string';
  return undefined;
}

/** The reply line text as sent: enhanced code first, then the text without line breaks. */
export function formatReply(reply: Reply): string {
  return `${reply.enhanced} ${reply.text.replace(/[\r\n\0]+/g, ' ')}`;
}
