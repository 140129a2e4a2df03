/**
 * How a listener binds its socket, whatever protocol it speaks.
 */
import type { AnyListenerConfig } from '../config/schema.js';

export interface ListenOptions {
  /** Bind an IPv6 address for IPv6 only (no IPv4-mapped clients). */
  readonly ipv6Only?: boolean;
}

/**
 * `[::]:25` beside `0.0.0.0:25` in one config: the IPv6 socket must leave IPv4
 * to the other, or Linux (net.ipv6.bindv6only = 0, its default) refuses the
 * second bind with EADDRINUSE. `[::]:25` alone keeps taking both families.
 */
export function listenOptions(listener: AnyListenerConfig, all: readonly AnyListenerConfig[]): ListenOptions {
  const { host, port } = listener.listen;
  if (host !== '::' || port === 0) return {};
  return { ipv6Only: all.some((o) => o !== listener && o.listen.host === '0.0.0.0' && o.listen.port === port) };
}
