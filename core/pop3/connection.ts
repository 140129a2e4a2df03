/**
 * The `Connection` plugins see for a POP3 client: the same interface as on
 * SMTP, so one connect-hook plugin (tcprules, a DNSBL) serves both.
 */
import type { Logger } from 'pino';
import type { Connection, ConnectionState, TimeLimits } from '../hooks.js';

export interface Endpoints {
  readonly remoteIp: string;
  readonly remotePort: number;
  readonly localIp: string;
  readonly localPort: number;
}

export class Pop3Connection implements Connection {
  readonly protocol = 'pop3' as const;
  readonly heloName = undefined;
  /** POP3 never relays; a plugin asking must get a plain no. */
  readonly relayAllowed = false;
  readonly state: ConnectionState = { env: {} };
  remoteHost: string | undefined;
  authUser: string | undefined;
  private readonly callbacks: Array<() => void> = [];
  private ended = false;

  constructor(
    readonly id: string,
    readonly listener: string,
    private readonly endpoints: Endpoints,
    private readonly tls: { readonly secure: boolean },
    private readonly limiter: (limits: TimeLimits) => void = () => undefined,
  ) {}

  limitTime(limits: TimeLimits): void {
    this.limiter(limits);
  }

  get remoteIp() {
    return this.endpoints.remoteIp;
  }
  get remotePort() {
    return this.endpoints.remotePort;
  }
  get localIp() {
    return this.endpoints.localIp;
  }
  get localPort() {
    return this.endpoints.localPort;
  }
  get secure() {
    return this.tls.secure;
  }

  onClose(callback: () => void): void {
    this.callbacks.push(callback);
  }

  /** Runs the onClose callbacks, once; a throwing callback does not stop the others. */
  end(log: Logger): void {
    if (this.ended) return;
    this.ended = true;
    for (const cb of this.callbacks) {
      try {
        cb();
      } catch (err) {
        log.error({ err }, 'onClose callback threw');
      }
    }
  }
}

/** The socket's own endpoints (no PROXY header said otherwise). */
export function socketEndpoints(socket: { readonly remoteAddress?: string; readonly remotePort?: number; readonly localAddress?: string; readonly localPort?: number }): Endpoints {
  return { remoteIp: plainIp(socket.remoteAddress), remotePort: socket.remotePort ?? 0, localIp: plainIp(socket.localAddress), localPort: socket.localPort ?? 0 };
}

/** An IPv4 client on a dual-stack socket appears as ::ffff:a.b.c.d; plugins and rules expect a.b.c.d. */
export function plainIp(address: string | undefined): string {
  return (address ?? '').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
}
