/**
 * Python's imaplib and poplib as a mail client would use them: log in, run
 * the test's steps (Python lines filling `out`), and hand back `out` as JSON,
 * with `error` set when the login or a command is refused.
 */
import { run } from '../helpers.js';

export type ClientResult = Record<string, unknown> & { error?: string };

const indent = (steps: string) =>
  steps
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');

async function python(script: string): Promise<ClientResult> {
  const r = await run('python3', ['-c', script]);
  if (r.code !== 0) throw new Error(`python3: ${r.stderr}`);
  return JSON.parse(r.stdout) as ClientResult;
}

/** IMAP LOGIN on 127.0.0.1:port, then `steps` (with `m` the connection), then LOGOUT. */
export function imap(port: number, user: string, password: string, steps = ''): Promise<ClientResult> {
  return python(`
import imaplib, json
out = {}
try:
    m = imaplib.IMAP4('127.0.0.1', ${port}, timeout=20)
    m.login(${JSON.stringify(user)}, ${JSON.stringify(password)})
${indent(steps)}
    m.logout()
except imaplib.IMAP4.error as e:
    out['error'] = str(e)
print(json.dumps(out))
`);
}

/** POP3 USER/PASS on 127.0.0.1:port, then `steps` (with `p` the connection); they QUIT if they want to. */
export function pop(port: number, user: string, password: string, steps: string): Promise<ClientResult> {
  return python(`
import json, poplib, sys, base64
out = {}
try:
    p = poplib.POP3('127.0.0.1', ${port}, timeout=20)
    p.user(${JSON.stringify(user)})
    p.pass_(${JSON.stringify(password)})
${indent(steps)}
except poplib.error_proto as e:
    out['error'] = e.args[0].decode()
print(json.dumps(out))
`);
}

/** POP3 login and STAT: `stat` is [messages, octets]. */
export async function popStat(port: number, user: string, password: string): Promise<{ stat?: number[]; error?: string }> {
  return (await pop(port, user, password, `out['stat'] = list(p.stat())\np.quit()`)) as { stat?: number[]; error?: string };
}
