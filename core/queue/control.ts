/**
 * The running server's control socket (`dataDir/yubin.sock`, mode 0600):
 * how `yubin queue flush|delete|bounce` and `yubin sendmail` reach the
 * scheduler while the server runs. One JSON request per line, one JSON
 * answer per line. Only the user running the server can connect.
 */
import { chmod, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import type { ServerOverview } from '../server.js';
import type { Scheduler } from './scheduler.js';

export type ControlRequest = { cmd: 'flush' } | { cmd: 'delete'; id: string } | { cmd: 'bounce'; id: string } | { cmd: 'notify'; id: string } | { cmd: 'status' } | { cmd: 'overview' };

export type ControlResponse = { ok: true; messages?: number; waiting?: number; active?: number; held?: number; overview?: ServerOverview } | { ok: false; error: string };

export function controlSocketPath(dataDir: string): string {
  return path.join(dataDir, 'yubin.sock');
}

export class ControlServer {
  private constructor(
    private readonly server: net.Server,
    private readonly file: string,
  ) {}

  static async listen(dataDir: string, scheduler: Scheduler, log: Logger, overview?: () => ServerOverview): Promise<ControlServer> {
    const file = controlSocketPath(dataDir);
    // A socket left by a process killed with -9; a live server would have the spool too, and two servers on one spool is a misconfiguration.
    await unlink(file).catch(() => undefined);
    const server = net.createServer((socket) => {
      let buf = '';
      socket.setEncoding('utf8');
      socket.on('error', () => undefined);
      socket.on('data', (chunk: string) => {
        buf += chunk;
        if (buf.length > 4096) return socket.destroy();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          void handle(scheduler, line, log, overview).then((res) => socket.write(JSON.stringify(res) + '\n'));
        }
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => resolve());
    });
    await chmod(file, 0o600);
    return new ControlServer(server, file);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await unlink(this.file).catch(() => undefined);
  }
}

async function handle(scheduler: Scheduler, line: string, log: Logger, overview: (() => ServerOverview) | undefined): Promise<ControlResponse> {
  let req: ControlRequest;
  try {
    req = JSON.parse(line) as ControlRequest;
  } catch {
    return { ok: false, error: 'not JSON' };
  }
  // What an administrator asked for is logged; sendmail's notices and status queries are not.
  if (req.cmd === 'flush' || req.cmd === 'delete' || req.cmd === 'bounce') log.info({ event: 'control', request: req }, `control: ${req.cmd}${'id' in req ? ` ${req.id}` : ''}`);
  try {
    switch (req.cmd) {
      case 'flush':
        return { ok: true, messages: scheduler.flush() };
      case 'status':
        return { ok: true, ...scheduler.counts() };
      case 'overview':
        return overview ? { ok: true, overview: overview() } : { ok: false, error: 'no overview here' };
      case 'notify':
        scheduler.add(req.id);
        return { ok: true };
      case 'delete':
      case 'bounce': {
        const found = req.cmd === 'delete' ? await scheduler.delete(req.id) : await scheduler.bounce(req.id);
        return found ? { ok: true } : { ok: false, error: `no message ${req.id} in the queue` };
      }
      default:
        return { ok: false, error: 'unknown command' };
    }
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

/** Asks the running server; undefined when none is running on this dataDir. */
export function controlRequest(dataDir: string, req: ControlRequest, timeoutMs = 10_000): Promise<ControlResponse | undefined> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(controlSocketPath(dataDir));
    let buf = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('the server did not answer on its control socket'));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(JSON.stringify(req) + '\n'));
    socket.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      socket.end();
      resolve(JSON.parse(buf.slice(0, nl)) as ControlResponse);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') resolve(undefined);
      else reject(err);
    });
  });
}
