/**
 * Open connections per client IP on one listener: the limit that keeps one
 * client from taking every slot (tcpserver's MAXCONNIP patch, Postfix's
 * anvil). A connection is counted from accept to close; whether it may stay
 * is decided after the connect hook, so a tcprules rule can set the limit
 * for its clients (MAXCONNIP) before it is applied.
 */
import type { ConnectionState } from '../hooks.js';

export interface IpSlot {
  /** Connections open from this IP when this one was accepted, itself included. */
  readonly rank: number;
  /** Uncounts the connection; safe to call twice. */
  release(): void;
}

export class IpConnections {
  private readonly open = new Map<string, number>();

  add(ip: string): IpSlot {
    const rank = (this.open.get(ip) ?? 0) + 1;
    this.open.set(ip, rank);
    let released = false;
    return {
      rank,
      release: () => {
        if (released) return;
        released = true;
        const left = (this.open.get(ip) ?? 1) - 1;
        if (left > 0) this.open.set(ip, left);
        else this.open.delete(ip);
      },
    };
  }

}

/** The limit this connection is held to, when its rank is past it; undefined when it may stay. */
export function overIpLimit(slot: IpSlot | undefined, state: ConnectionState, listenerLimit: number): number | undefined {
  if (!slot) return undefined;
  const limit = state.maxConnectionsPerIp ?? listenerLimit;
  return limit > 0 && slot.rank > limit ? limit : undefined;
}
