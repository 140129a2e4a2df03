/**
 * The benchmark's mailbox: a Maildir of generated messages, stored the way
 * qmail and vpopmail store mail (LF line ends) and named the way yubin's
 * delivery names files, with Maildir++'s sizes in the name:
 *
 *     cur/<sec>.M<usec>P<pid>Q<n>.<host>,S=<stored octets>,W=<octets with CRLF>:2,
 *
 * The files sit in cur/ with an empty info part (`:2,`), which is where
 * qmail-pop3d leaves mail it has shown once: no server has a reason to move
 * or rename them during a session that deletes nothing.
 *
 * Generation is deterministic for a given seed and count (apart from the
 * host and PID in the names).
 */
import { mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { prng } from '../common.js';
import { mustRun } from '../smtp-accept/proc.js';

export interface MessageFile {
  /** The file name without the `:2,` info part: what a POP3 server shows as UIDL (qmail-pop3d, Dovecot's %f). */
  readonly base: string;
  /** Name in cur/. */
  readonly file: string;
  /** Octets on disk (LF line ends). */
  readonly stored: number;
  /** Octets with CRLF line ends: the POP3 size. */
  readonly crlf: number;
}

export interface Mailbox {
  readonly dir: string;
  /** The generated original, which no server touches: what every copy's messages are checked against. */
  readonly master: string;
  readonly messages: readonly MessageFile[];
  readonly totalStored: number;
  readonly totalCrlf: number;
  /** Messages with a body line that starts with a dot (dot-stuffed on the wire). */
  readonly withDotLines: number;
}

const WORDS = (
  'the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there one all we their ' +
  'meeting schedule invoice report quarterly server mailbox delivery queue message attached please review thanks regards update project release ' +
  'deadline budget customer account password reset confirm order shipping tracking newsletter subscribe unsubscribe offer discount today tomorrow ' +
  'weekend office remote network backup restore storage migration cluster latency throughput benchmark kernel patch upgrade security advisory'
).split(' ');
const NAMES = ['Alice Martin', 'Bob Schneider', 'Carol Nguyen', 'Dave Okafor', 'Erin Kowalski', 'Frank Rossi', 'Grace Tanaka', 'Heidi Larsen', 'Ivan Petrov', 'Judy Moreau'];
const DOMAINS = ['example.org', 'example.com', 'mail.example.net', 'lists.example.org', 'shop.example.com', 'news.example.net'];
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
/** Body lines that start with a dot, as people write them (they get dot-stuffed on the wire; "." alone too). */
const DOT_LINES = ['.', '...', '.. and so on', '.net and .com are both fine', '.signature follows', '. . .'];

function rfc2822(sec: number): string {
  const d = new Date(sec * 1000);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

/** One message (LF line ends, ends with LF) of about `target` octets. */
function makeMessage(r: () => number, i: number, sec: number, target: number, recipient: string): { text: string; dotLines: boolean } {
  const pick = <T>(a: readonly T[]) => a[Math.floor(r() * a.length)]!;
  const word = () => pick(WORDS);
  const hex = (n: number) => Array.from({ length: n }, () => Math.floor(r() * 16).toString(16)).join('');
  const name = pick(NAMES);
  const domain = pick(DOMAINS);
  const local = name.toLowerCase().replace(' ', '.');
  const from = `${local}@${domain}`;
  const ip = `192.0.2.${1 + Math.floor(r() * 250)}`;
  const subject = Array.from({ length: 3 + Math.floor(r() * 6) }, word).join(' ');
  const multipart = r() < 0.2;
  const boundary = `----=_Part_${hex(16)}`;
  const h: string[] = [
    `Return-Path: <${from}>`,
    `Delivered-To: ${recipient}`,
    `Received: from mx.${domain} (mx.${domain} [${ip}])`,
    `\tby mx.example.test (yubin) with ESMTPS id ${hex(12)}`,
    `\tfor <${recipient}>; ${rfc2822(sec)}`,
    `Received: from [10.${Math.floor(r() * 255)}.${Math.floor(r() * 255)}.${Math.floor(r() * 255)}] (client.${domain} [10.1.2.3])`,
    `\tby mx.${domain} (Postfix) with ESMTPSA id ${hex(10).toUpperCase()};`,
    `\t${rfc2822(sec - 2)}`,
    `DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=${domain}; s=sel1;`,
    `\th=from:to:subject:date:message-id; bh=${Buffer.from(hex(32), 'hex').toString('base64')};`,
    `\tb=${Array.from({ length: 3 }, () => Buffer.from(hex(48), 'hex').toString('base64')).join('\n\t  ')}`,
    `Message-ID: <${sec}.${hex(8)}.${i}@${domain}>`,
    `Date: ${rfc2822(sec - 3)}`,
    `From: "${name}" <${from}>`,
    `To: <${recipient}>`,
    `Subject: ${r() < 0.3 ? 'Re: ' : ''}${subject}`,
    'MIME-Version: 1.0',
    multipart ? `Content-Type: multipart/mixed; boundary="${boundary}"` : 'Content-Type: text/plain; charset=utf-8; format=flowed',
    ...(multipart ? [] : ['Content-Transfer-Encoding: 8bit']),
    `X-Mailer: BenchMail ${1 + Math.floor(r() * 9)}.${Math.floor(r() * 10)}`,
  ];
  const lines: string[] = [...h, ''];
  let size = lines.reduce((s, l) => s + l.length + 1, 0);
  const push = (l: string) => {
    lines.push(l);
    size += l.length + 1;
  };
  let dotLines = false;
  if (multipart) {
    push('This is a multi-part message in MIME format.');
    push('');
    push(`--${boundary}`);
    push('Content-Type: text/plain; charset=utf-8');
    push('');
  }
  const textTarget = multipart ? Math.min(target, size + 600 + Math.floor(r() * 1500)) : target;
  while (size < textTarget) {
    if (r() < 0.0015) {
      push(pick(DOT_LINES));
      dotLines = true;
      continue;
    }
    if (r() < 0.1) {
      push('');
      continue;
    }
    let line = word();
    const width = 40 + Math.floor(r() * 36);
    while (line.length < width) line += ' ' + word();
    push(line);
  }
  if (multipart) {
    push('');
    push(`--${boundary}`);
    push(`Content-Type: application/octet-stream; name="report-${i}.bin"`);
    push('Content-Transfer-Encoding: base64');
    push(`Content-Disposition: attachment; filename="report-${i}.bin"`);
    push('');
    while (size < target) push(Array.from({ length: 76 }, () => B64[Math.floor(r() * 64)]).join(''));
    push(`--${boundary}--`);
  }
  return { text: lines.join('\n') + '\n', dotLines };
}

/** The host part of Maildir names, escaped as in core/maildir.ts. */
const HOST = os.hostname().replace(/\//g, '\\057').replace(/:/g, '\\072');

export interface GenerateOptions {
  readonly count: number;
  readonly minSize: number;
  readonly maxSize: number;
  readonly seed: number;
  readonly recipient: string;
}

/** Writes a fresh Maildir (tmp, new, cur; messages in cur) and describes it. */
export function generateMaildir(dir: string, o: GenerateOptions): Mailbox {
  for (const sub of ['tmp', 'new', 'cur']) mkdirSync(path.join(dir, sub), { recursive: true, mode: 0o700 });
  const r = prng(o.seed);
  const messages: MessageFile[] = [];
  let totalStored = 0;
  let totalCrlf = 0;
  let withDotLines = 0;
  const sec0 = 1_764_000_000; // late November 2025: all names have the same number of digits
  for (let i = 0; i < o.count; i++) {
    const sec = sec0 + i * 37 + Math.floor(r() * 30);
    const target = o.minSize + Math.floor(r() * (o.maxSize - o.minSize + 1));
    const { text, dotLines } = makeMessage(r, i, sec, target, o.recipient);
    const data = Buffer.from(text, 'utf8');
    let lfs = 0;
    for (let k = data.indexOf(10); k >= 0; k = data.indexOf(10, k + 1)) lfs++;
    const stored = data.length;
    const crlf = stored + lfs;
    const usec = Math.floor(r() * 1_000_000);
    const base = `${sec}.M${usec}P${process.pid}Q${i + 1}.${HOST},S=${stored},W=${crlf}`;
    const file = `${base}:2,`;
    const full = path.join(dir, 'cur', file);
    writeFileSync(full, data, { mode: 0o600 });
    utimesSync(full, sec, sec);
    messages.push({ base, file, stored, crlf });
    totalStored += stored;
    totalCrlf += crlf;
    if (dotLines) withDotLines++;
  }
  return { dir, master: dir, messages, totalStored, totalCrlf, withDotLines };
}

/** A copy of a Maildir (names, contents and mtimes kept), by `cp -a` in a child so a signal is handled meanwhile. */
export async function copyMaildir(src: Mailbox, dst: string, hardLinks = false): Promise<Mailbox> {
  await mustRun('cp', [hardLinks ? '-al' : '-a', src.dir, dst]);
  return { ...src, dir: dst };
}

/**
 * The messages of a Maildir (new/ and cur/) by base name, the part before
 * `:2,`, sorted: a server that marks what it sent as seen (yubin, Dovecot
 * with its default flag updates) renames files, but never loses or adds one.
 */
export function listMessages(dir: string): string[] {
  const out: string[] = [];
  for (const sub of ['new', 'cur']) {
    for (const name of readdirSync(path.join(dir, sub))) out.push(name.replace(/:2,.*$/, ''));
  }
  return out.sort();
}

/** A message as a POP3 server must send it (before dot-stuffing): LF turned into CRLF, from the untouched original. */
export function wireForm(m: Mailbox, msg: MessageFile): Buffer {
  return Buffer.from(readFileSync(path.join(m.master, 'cur', msg.file)).toString('latin1').replace(/\n/g, '\r\n'), 'latin1');
}
