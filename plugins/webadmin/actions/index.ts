/**
 * The one action layer: every read and change webadmin offers, as a method,
 * a path under /api/v1, the role it needs and a function. The JSON API and
 * the HTML forms both call these (api.ts); pages read through them too, so a
 * page can show nothing the API would not answer to the same person.
 *
 * The actions live by who may run them: user.ts (anyone, on their own
 * account), server.ts (server admins), domain.ts (domain admins); common.ts
 * holds what they share. This file has the types and the combined list.
 */
import type { Role, Who } from '../auth.js';
import type { WebadminContext } from '../context.js';
import { DOMAIN_ACTIONS } from './domain.js';
import { SERVER_ACTIONS } from './server.js';
import { USER_ACTIONS } from './user.js';

export { ActionError, domainView, usageOf, userView, type UsageView } from './common.js';

export type Fields = Readonly<Record<string, unknown>>;

export interface ActionCall {
  readonly ctx: WebadminContext;
  readonly who: Who;
  readonly params: Readonly<Record<string, string>>;
  readonly body: Fields;
  readonly query: Readonly<Record<string, string>>;
}

export interface ActionResult {
  /** The JSON answer. Never holds a password. */
  readonly data: unknown;
  /** One line for the flash message after a form. */
  readonly message: string;
  /** Shown as is under the flash message (the DNS record to publish). */
  readonly detail?: string;
  /** For the log line of a change; reads have none. */
  readonly change?: { readonly action: string; readonly target: string };
}

export interface Action {
  readonly method: 'GET' | 'POST';
  /** Fastify path under /api/v1. */
  readonly path: string;
  /** server: server admins; domain: admins of the :domain in the path (and server admins); user: anyone logged in, on their own account. */
  readonly role: Role;
  run(call: ActionCall): Promise<ActionResult>;
}

/** Every action: the user's own, then the server admin's, then the domain admin's. */
export const ACTIONS: readonly Action[] = [...USER_ACTIONS, ...SERVER_ACTIONS, ...DOMAIN_ACTIONS];

/** May WHO act on DOMAIN as its admin? */
export function adminsDomain(who: Who, domain: string): boolean {
  return who.role === 'server' || (who.role === 'domain' && who.domain === domain.toLowerCase());
}
