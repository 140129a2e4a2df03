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

/** A connection counted by the cluster's primary, across every worker. */
export interface SharedSlot extends IpSlot {
  /** Connections open on this listener in all workers when this one was accepted, itself included. */
  readonly total: number;
}

/**
 * Connection counts kept outside this process (`workers: N`: the primary
 * keeps them, so maxConnections and maxConnectionsPerIp hold across
 * workers). A listener given one asks it at accept, instead of counting
 * locally, and waits for the answer before it greets.
 */
export interface SharedSlots {
  acquire(listener: string, ip: string): Promise<SharedSlot>;
}

/**
 * A shared slot being acquired for a connection that may close before the
 * answer comes: a release asked for early is done when the slot arrives.
 */
export class PendingSlot {
  private slot: SharedSlot | undefined;
  private closed = false;
  readonly ready: Promise<SharedSlot>;

  constructor(pending: Promise<SharedSlot>) {
    this.ready = pending.then((slot) => {
      this.slot = slot;
      if (this.closed) slot.release();
      return slot;
    });
    this.ready.catch(() => undefined);
  }

  release(): void {
    this.closed = true;
    this.slot?.release();
  }
}

/** The limit this connection is held to, when its rank is past it; undefined when it may stay. */
export function overIpLimit(slot: IpSlot | undefined, state: ConnectionState, listenerLimit: number): number | undefined {
  if (!slot) return undefined;
  const limit = state.maxConnectionsPerIp ?? listenerLimit;
  return limit > 0 && slot.rank > limit ? limit : undefined;
}
