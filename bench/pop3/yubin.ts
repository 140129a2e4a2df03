/** Starts and stops yubin-server.js (this checkout's yubin, one POP3 listener) as a child process. */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stopChild } from '../smtp-accept/proc.js';
import { waitForPop3, type BenchUser, type PopServer } from './dovecot.js';

/** JSON log lines at warn or worse, and anything that is not a JSON log line. */
function yubinProblems(log: string): string[] {
  const out: string[] = [];
  for (const line of log.split('\n')) {
    if (!line.trim()) continue;
    try {
      const o = JSON.parse(line) as { level?: number };
      if ((o.level ?? 0) >= 40) out.push(line);
    } catch {
      out.push(line);
    }
  }
  return out;
}

/** `dist`: another build's dist/ directory to measure (its bench/pop3/yubin-server.js); this one's by default. */
export async function startYubin(dir: string, users: readonly BenchUser[], password: string, nodeArgs: readonly string[] = [], dist?: string): Promise<PopServer> {
  const script = dist ? path.resolve(dist, 'bench/pop3/yubin-server.js') : path.join(path.dirname(fileURLToPath(import.meta.url)), 'yubin-server.js');
  const logFile = path.join(dir, 'yubin.log');
  const input = { users: Object.fromEntries(users.map((u) => [u.name, u.maildir])), password, dataDir: path.join(dir, 'data') };
  const err = openSync(logFile, 'a');
  const child = spawn(process.execPath, [...nodeArgs, script], { stdio: ['pipe', 'pipe', err], cwd: dir, env: { ...process.env, YUBIN_BENCH_POP3: JSON.stringify(input) } });
  closeSync(err);
  const read = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const logTail = () => read().trim().split('\n').slice(-20).join('\n');
  let exited: string | undefined;
  child.once('exit', (code, sig) => (exited = `yubin exited ${code ?? sig}`));
  const stop = async () => {
    await stopChild(child, 'SIGTERM', 10_000);
  };
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`yubin did not start within 30 s: ${logTail()}`)), 30_000);
      child.stdout!.setEncoding('utf8').on('data', (s: string) => {
        out += s;
        const nl = out.indexOf('\n');
        if (nl >= 0) {
          clearTimeout(timer);
          try {
            resolve((JSON.parse(out.slice(0, nl)) as { port: number }).port);
          } catch {
            reject(new Error(`yubin-server said ${JSON.stringify(out.slice(0, nl))}`));
          }
        }
      });
      child.once('exit', () => {
        clearTimeout(timer);
        reject(new Error(`${exited}: ${logTail()}`));
      });
    });
    const greeting = await waitForPop3(port, 15_000, () => (exited ? `${exited}: ${logTail()}` : undefined));
    return {
      name: 'yubin',
      port,
      greeting,
      rootPid: child.pid!,
      pids: () => (exited ? [] : [child.pid!]),
      async settle() {},
      stop,
      logTail,
      problems: () => yubinProblems(read()),
    };
  } catch (e) {
    // Keep the port if it was reported: a -ERR greeting is a finding, not a crash.
    await stop();
    throw e;
  }
}
