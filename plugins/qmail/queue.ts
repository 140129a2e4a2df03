/**
 * Messages still in qmail's queue (/var/qmail/queue), for `yubin import
 * qmail`: nothing qmail accepted may be lost in the move. The layout is
 * qmail 1.03's (INTERNALS, qmail-queue(8)):
 *
 * - `mess/N/INODE`: the message as qmail-queue wrote it (its Received line on top);
 * - `info/N/INODE`: `F` + envelope sender + NUL;
 * - `local/N/INODE`, `remote/N/INODE`: one `T` + address + NUL per recipient
 *   still to do, `D` + address + NUL once done;
 * - `todo/INODE`: a message qmail-send has not looked at yet, its envelope in
 *   qmail-queue's own form (`u`uid, `p`pid, `F`sender, `T`recipient..., NUL-separated).
 *
 * N is INODE modulo the queue's split (23 unless conf-split said otherwise);
 * the directories are read as they are, whatever the split was. Local
 * recipients of a virtual domain carry its prefix (`example.jp-alice@example.jp`):
 * `virtualDomains` takes it off again.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { SourceProblem } from '../../core/source-lines.js';

export interface QueuedInQmail {
  /** The inode number qmail names it by. */
  readonly id: string;
  /** `mess/N/INODE`. */
  readonly file: string;
  /** Envelope sender; '' for the null sender `<>`. */
  readonly sender: string;
  /** Recipients still to deliver, as they were given to qmail. */
  readonly recipients: readonly string[];
  /** When qmail took it (the message file's mtime), in milliseconds. */
  readonly received: number;
}

export type QueueProblem = SourceProblem;

/** Every file under dir/N/ (or directly in dir for an unsplit todo), by name. */
function filesOf(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!existsSync(dir)) return out;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) for (const f of readdirSync(p)) out.set(f, path.join(p, f));
    else out.set(entry.name, p);
  }
  return out;
}

/** NUL-terminated fields, each a type letter and its value. */
function fields(buf: Buffer): Array<{ type: string; value: string }> {
  const parts = buf.toString('latin1').split('\0');
  parts.pop(); // after the last NUL
  return parts.filter((p) => p !== '').map((p) => ({ type: p[0]!, value: p.slice(1) }));
}

export function readQmailQueue(queueDir: string, virtualDomains: ReadonlyArray<{ readonly domain: string; readonly prefix: string }> = []): { messages: QueuedInQmail[]; problems: QueueProblem[] } {
  const messages: QueuedInQmail[] = [];
  const problems: QueueProblem[] = [];
  const unprefix = (address: string): string => {
    const at = address.lastIndexOf('@');
    const domain = address.slice(at + 1).toLowerCase();
    const vd = virtualDomains.find((v) => v.domain === domain);
    const local = address.slice(0, at);
    return vd && local.startsWith(`${vd.prefix}-`) ? `${local.slice(vd.prefix.length + 1)}@${address.slice(at + 1)}` : address;
  };
  const [mess, info, local, remote, todo] = ['mess', 'info', 'local', 'remote', 'todo'].map((d) => filesOf(path.join(queueDir, d))) as [
    Map<string, string>,
    Map<string, string>,
    Map<string, string>,
    Map<string, string>,
    Map<string, string>,
  ];
  for (const [id, file] of [...mess].sort((a, b) => Number(a[0]) - Number(b[0]))) {
    let sender: string | undefined;
    const recipients: string[] = [];
    const todoFile = todo.get(id);
    if (todoFile) {
      // Not preprocessed yet: the envelope is all in todo.
      for (const f of fields(readFileSync(todoFile))) {
        if (f.type === 'F') sender = f.value;
        else if (f.type === 'T') recipients.push(f.value);
      }
    } else {
      const infoFile = info.get(id);
      if (!infoFile) {
        problems.push({ where: file, reason: 'no info file: qmail had not finished queueing it (qmail-queue failed), so it was never accepted' });
        continue;
      }
      sender = fields(readFileSync(infoFile)).find((f) => f.type === 'F')?.value;
      for (const list of [local.get(id), remote.get(id)]) {
        if (!list) continue;
        for (const f of fields(readFileSync(list))) if (f.type === 'T') recipients.push(unprefix(f.value));
      }
    }
    if (sender === undefined) {
      problems.push({ where: todoFile ?? info.get(id)!, reason: 'no F (sender) field' });
      continue;
    }
    if (!recipients.length) {
      problems.push({ where: file, reason: 'every recipient is done: nothing left to deliver' });
      continue;
    }
    messages.push({ id, file, sender, recipients, received: statSync(file).mtimeMs });
  }
  return { messages, problems };
}
