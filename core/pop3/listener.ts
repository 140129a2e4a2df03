/**
 * One POP3 listener (qmail-popup + qmail-pop3d). STUB: being written.
 */
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import type { Logger } from 'pino';
import type { ListenerTls } from '../smtp/listener.js';
import type { ListenerRuntime, SessionEnv } from '../smtp/session.js';

export class Pop3Listener {
  private readonly server: net.Server;
  constructor(
    public runtime: ListenerRuntime,
    readonly env: SessionEnv,
    readonly tlsSettings: ListenerTls,
    private readonly log: Logger,
  ) {
    this.server = net.createServer((s) => s.end('-ERR not yet\r\n'));
    void this.log;
  }
  get name(): string {
    return this.runtime.name;
  }
  applyLimits(): void {}
  async listen(): Promise<AddressInfo> {
    const { host, port } = this.runtime.config.listen;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve());
    });
    return this.address();
  }
  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }
  async drain(_timeoutMs: number): Promise<void> {
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
