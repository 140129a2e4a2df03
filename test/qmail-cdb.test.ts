/**
 * cdb files as qmail boxes have them, made by the real tools: tinycdb's `cdb`
 * (the format vpopmail's vpasswd.cdb and qmail-newmrh use) and ucspi-tcp's
 * `tcprules`, read back by yubin and checked against `cdb -d` and
 * `tcprulescheck`. The first step of `yubin import qmail` (issue 12).
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { CdbError, cdbGet, cdbRecords } from '../core/cdb.js';
import { rulesFromCdb } from '../plugins/tcprules/cdb.js';
import { findRule, parseRules } from '../plugins/tcprules/rules.js';
import { needs, run, tempDir } from './helpers.js';

t.test('records and lookups agree with tinycdb on 600 keys, repeats included', needs('cdb'), async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'test.cdb');
  const lines: string[] = [];
  for (let i = 0; i < 600; i++) lines.push(`key${i} value-${i}-${'x'.repeat(i % 37)}`);
  lines.push('key7 second-value', 'vpasswd-like one:two:three');
  const made = await run('cdb', ['-c', '-m', file], { input: lines.join('\n') + '\n' });
  t.equal(made.code, 0, made.stderr);
  const buf = await readFile(file);
  // `cdb -d` dumps every record as +klen,dlen:key->data, in file order.
  const dump = await run('cdb', ['-d', file]);
  const expected = [...dump.stdout.matchAll(/^\+\d+,\d+:(.*?)->(.*)$/gm)].map((m) => `${m[1]}=${m[2]}`);
  t.equal(expected.length, 602);
  t.same([...cdbRecords(buf)].map((r) => `${r.key}=${r.data}`), expected, 'every record, in order');
  t.same(cdbGet(buf, 'key7').map(String), ['value-7-xxxxxxx', 'second-value'], 'both values of a repeated key, in order');
  t.same(cdbGet(buf, 'key599').map(String), [`value-599-${'x'.repeat(599 % 37)}`]);
  t.same(cdbGet(buf, 'vpasswd-like').map(String), ['one:two:three']);
  t.same(cdbGet(buf, 'absent'), [], 'a missing key');
  for (let i = 0; i < 600; i += 37) t.equal(String(cdbGet(buf, `key${i}`)[0]), `value-${i}-${'x'.repeat(i % 37)}`);
});

t.test('a file that is not a cdb is an error naming what is wrong', async (t) => {
  t.throws(() => [...cdbRecords(Buffer.from('hello'))], new CdbError('not a cdb: 5 bytes, shorter than the 2048-byte header'));
  const bad = Buffer.alloc(2048 + 16);
  for (let i = 0; i < 256; i++) bad.writeUInt32LE(2048 + 8, i * 8);
  bad.writeUInt32LE(100, 2048); // a key length that runs past the records
  t.throws(() => [...cdbRecords(bad)], /cdb record at 2048: key 100 \+ data 0 bytes run past the records/);
  const outside = Buffer.alloc(2048);
  outside.writeUInt32LE(9999, 0);
  t.throws(() => cdbGet(outside, 'x'), /hash table 0 at 9999 .* lies outside the file/);
});

t.test('tcp.smtp.cdb from the real tcprules decodes to rules that answer as tcprulescheck does', needs('tcprules', 'tcprulescheck'), async (t) => {
  const dir = await tempDir(t);
  const source = [
    '# the seed guide\'s tcp.smtp, and more',
    '127.:allow,RELAYCLIENT=""',
    '192.168.10.20:allow,RELAYCLIENT=""',
    '192.168.10.21:allow,RELAYCLIENT="",RBLSMTPD=""',
    '10.1.2.3-5:deny',
    '10.9.:allow,RBLSMTPD="-refused, go away"',
    '172.16.0.1:allow,GREETING=/say "hi"/,MAXCONNIP="3"',
    '=mail.example.net:allow,RELAYCLIENT=""',
    '=.spam.example:deny',
    ':allow',
    '',
  ].join('\n');
  const cdb = path.join(dir, 'tcp.smtp.cdb');
  const made = await run('tcprules', [cdb, path.join(dir, 'tcp.smtp.tmp')], { input: source });
  t.equal(made.code, 0, made.stderr);
  const decoded = rulesFromCdb(await readFile(cdb));
  t.equal(decoded.rules, 11, 'one rule per key: the range is three');
  t.same(decoded.skipped, []);
  await writeFile(path.join(dir, 'decoded.tcp'), decoded.text);
  const rules = parseRules(decoded.text);

  const cases: Array<[string, string?]> = [
    ['127.0.0.1'],
    ['192.168.10.20'],
    ['192.168.10.21'],
    ['192.168.10.22'],
    ['10.1.2.4'],
    ['10.1.2.6'],
    ['10.9.8.7'],
    ['172.16.0.1'],
    ['203.0.113.5', 'mail.example.net'],
    ['203.0.113.6', 'mx.spam.example'],
    ['198.51.100.1'],
  ];
  for (const [ip, host] of cases) {
    const env: NodeJS.ProcessEnv = { ...process.env, TCPREMOTEIP: ip };
    if (host) env.TCPREMOTEHOST = host;
    else delete env.TCPREMOTEHOST;
    const check = await run('tcprulescheck', [cdb], { env });
    const theirs = {
      action: /deny connection/.test(check.stdout) ? 'deny' : 'allow',
      vars: Object.fromEntries([...check.stdout.matchAll(/^set environment variable (\w+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!])),
    };
    const rule = findRule(rules, ip, host);
    const ours = { action: rule?.action ?? 'allow', vars: { ...(rule?.vars ?? {}) } };
    t.same(ours, theirs, `${ip}${host ? ` (${host})` : ''}: ${theirs.action} ${JSON.stringify(theirs.vars)}`);
  }
});
