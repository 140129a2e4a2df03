/**
 * Where idle clients wait with the least a connection can cost.
 *
 * A whole smtp-server connection (a piped Writable parser, its stream states
 * and pipe closures, listener arrays, bound handlers, a Timeout) is about
 * 8 KB of heap, most of it there only to parse input. A client that was
 * greeted and has sent nothing yet has no input to parse, and an MX holds
 * thousands of those (slow clients, scanners, clients that never speak). So
 * such a socket is parked: it keeps the socket and one compact record, with
 * three listeners shared by every parked socket and no timer of its own.
 * One coarse interval, running only while something is parked, checks the
 * records' idle deadlines. Any event (bytes, the deadline, a close, an
 * error) hands the record back to its owner, which makes the whole
 * connection again when it needs one.
 */
import type net from 'node:net';

/** What the lot keeps of a parked client. */
export interface Parked {
  readonly socket: net.Socket;
  /** Date.now() at which the idle timeout runs out. */
  deadline: number;
}

/** What the owner does when something happens to a parked client (it is out of the lot by then). */
export interface ParkingEvents<P extends Parked> {
  /** The client sent something: `chunk` is the first of it. */
  data(parked: P, chunk: Buffer): void;
  /** The idle deadline passed. */
  expired(parked: P): void;
  /** The socket closed. */
  closed(parked: P): void;
  /** The socket failed ('closed' follows). */
  error(parked: P, err: Error): void;
}

/** How often the deadlines are checked: a parked client's idle timeout fires up to this much late. */
export const PARKING_TICK_MS = 250;
/** Idle timeouts shorter than this are left to the socket's own timer, where a tick's lateness would matter. */
export const MIN_PARKED_IDLE_MS = 10 * PARKING_TICK_MS;

export class ParkingLot<P extends Parked> {
  private readonly parked = new Map<net.Socket, P>();
  private timer: NodeJS.Timeout | undefined;
  // One set of listeners for every parked socket (`this` is the socket), so parking one costs no closures.
  private readonly onData: (this: net.Socket, chunk: Buffer) => void;
  private readonly onClose: (this: net.Socket) => void;
  private readonly onError: (this: net.Socket, err: Error) => void;

  constructor(
    private readonly events: ParkingEvents<P>,
    private readonly tickMs = PARKING_TICK_MS,
  ) {
    const lot = this;
    this.onData = function (chunk) {
      const p = lot.take(this);
      if (p) lot.events.data(p, chunk);
    };
    this.onClose = function () {
      const p = lot.take(this);
      if (p) lot.events.closed(p);
    };
    this.onError = function (err) {
      const p = lot.parked.get(this);
      // The socket stays parked: 'close' follows and ends it.
      if (p) lot.events.error(p, err);
    };
  }

  /** Clients parked now. */
  get size(): number {
    return this.parked.size;
  }

  /** Parks a socket whose owner let go of it (paused, none of the owner's listeners on it). */
  park(p: P): void {
    const socket = p.socket;
    this.parked.set(socket, p);
    socket.on('data', this.onData);
    socket.on('close', this.onClose);
    socket.on('error', this.onError);
    socket.resume();
    if (!this.timer) {
      this.timer = setInterval(() => this.sweep(), this.tickMs);
      this.timer.unref();
    }
  }

  /** Takes a client out of the lot (its listeners off, the socket paused); undefined if it is not parked. */
  take(socket: net.Socket): P | undefined {
    const p = this.parked.get(socket);
    if (!p) return undefined;
    this.parked.delete(socket);
    socket.removeListener('data', this.onData);
    socket.removeListener('close', this.onClose);
    socket.removeListener('error', this.onError);
    if (!socket.destroyed) socket.pause();
    if (this.parked.size === 0) this.stop();
    return p;
  }

  /** Every parked client, taken out of the lot. */
  takeAll(): P[] {
    return [...this.parked.keys()].map((socket) => this.take(socket)!);
  }

  private sweep(): void {
    const now = Date.now();
    const due: net.Socket[] = [];
    for (const [socket, p] of this.parked) if (p.deadline <= now) due.push(socket);
    for (const socket of due) {
      const p = this.take(socket);
      if (p) this.events.expired(p);
    }
  }

  private stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
