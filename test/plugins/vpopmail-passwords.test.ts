/** vpopmail passwords: scrypt for new hashes; MD5-crypt, SHA-crypt and clear text from old vpasswd files. */
import { execFileSync } from 'node:child_process';
import { createHash, createHmac, scryptSync } from 'node:crypto';
import t from 'tap';
import {
  apopDigest, clearTextEquals, constantTimeEqual, cramMd5Digest, hashPassword, hashScheme, isClearTextHash,
  isVerifiable, needsRehash, SCRYPT_PARAMETERS, unixCrypt, verifyPassword,
} from '../../plugins/vpopmail/passwords.js';
import { needs } from '../helpers.js';

// Published vectors from Drepper's SHA-crypt specification: [setting, password, result].
// They cover the default 5000 rounds, explicit rounds (kept in the output even
// when 5000), rounds=10 clamped to 1000, and salts truncated at 16 characters.
const SHA_SPEC_VECTORS: [string, string, string][] = [
  ['$5$saltstring', 'Hello world!', '$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5'],
  ['$5$rounds=10000$saltstringsaltstring', 'Hello world!', '$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA'],
  ['$5$rounds=5000$toolongsaltstring', 'This is just a test', '$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5'],
  ['$5$rounds=1400$anotherlongsaltstring', 'a very much longer text to encrypt.  This one even stretches over morethan one line.',
    '$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1'],
  ['$5$rounds=77777$short', 'we have a short salt string but not a short password', '$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/'],
  ['$5$rounds=123456$asaltof16chars..', 'a short string', '$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD'],
  ['$5$rounds=10$roundstoolow', 'the minimum number is still observed', '$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC'],
  ['$6$saltstring', 'Hello world!',
    '$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1'],
  ['$6$rounds=10000$saltstringsaltstring', 'Hello world!',
    '$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.'],
  ['$6$rounds=5000$toolongsaltstring', 'This is just a test',
    '$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0'],
  ['$6$rounds=1400$anotherlongsaltstring', 'a very much longer text to encrypt.  This one even stretches over morethan one line.',
    '$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1'],
  ['$6$rounds=77777$short', 'we have a short salt string but not a short password',
    '$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0'],
  ['$6$rounds=123456$asaltof16chars..', 'a short string',
    '$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1'],
  ['$6$rounds=10$roundstoolow', 'the minimum number is still observed',
    '$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.'],
];

// Widely published MD5-crypt results (FreeBSD / glibc test suites).
const MD5_VECTORS: [string, string, string][] = [
  ['$1$$', 'abcdefghijk', '$1$$pL/BYSxMXs.jVuSV1lynn1'],
  ['$1$deadbeef$', 'password', '$1$deadbeef$Q7g0UO4hRC0mgQUQ/qkjZ0'],
  ['$1$oKnN0HHt$', 'hello', '$1$oKnN0HHt$Aul2g/J4edgga3WE/03cN/'],
  ['$1$oKnN0HHt$', 'this is a password longer than 16 characters', '$1$oKnN0HHt$KtM1JhHfFNyQOq5OgbGo.1'],
];

function openssl(flag: '-1' | '-5' | '-6', salt: string, password: string): string {
  return execFileSync('openssl', ['passwd', flag, '-salt', salt, password], { encoding: 'utf8' }).trim();
}

t.test('SHA-crypt: the specification vectors, computed and verified', async (t) => {
  for (const [setting, password, expected] of SHA_SPEC_VECTORS) {
    t.equal(await unixCrypt(password, setting), expected, setting);
    t.ok(await verifyPassword(password, expected), `verifies ${setting}`);
    t.notOk(await verifyPassword(`${password}x`, expected), `wrong password fails for ${setting}`);
  }
  t.equal(hashScheme(SHA_SPEC_VECTORS[0]![2]), 'sha256-crypt');
  t.equal(hashScheme(SHA_SPEC_VECTORS[7]![2]), 'sha512-crypt');
});

t.test('MD5-crypt: published vectors', async (t) => {
  for (const [setting, password, expected] of MD5_VECTORS) {
    t.equal(await unixCrypt(password, setting), expected, `${setting} ${password}`);
    t.ok(await verifyPassword(password, expected));
    t.notOk(await verifyPassword(password.toUpperCase(), expected), 'wrong password fails');
  }
  t.equal(hashScheme(MD5_VECTORS[0]![2]), 'md5-crypt');
  // Salts longer than 8 characters are cut, as by crypt(3).
  t.equal(await unixCrypt('pw', '$1$123456789abc$'), await unixCrypt('pw', '$1$12345678'));
});

t.test('agrees with openssl passwd for generated hashes', needs('openssl'), async (t) => {
  const cases: ['-1' | '-5' | '-6', string, string][] = [
    ['-1', 'saltsalt', 'hello'],
    ['-1', 'ab', 'p@ss w0rd!'],
    ['-1', 'x1y2z3', 'a'.repeat(70)],
    ['-1', 'q', 'Ünïcødé pässwörd ✓'],
    ['-5', 'saltstring', 'Hello world!'],
    ['-5', 'rounds=5000$abc', 'secret'],
    ['-5', 'rounds=2001$0123456789abcdefXYZ', 'long salt is cut at 16'],
    ['-5', 'Zz', 'パスワード'],
    ['-6', 'saltstring', 'Hello world!'],
    ['-6', 'rounds=1000$abc', 'x'],
    ['-6', 'zyxwvutsrqponmlk', 'b'.repeat(129)],
    ['-6', 'salt', 'ünïcødé'],
  ];
  for (const [flag, salt, password] of cases) {
    const expected = openssl(flag, salt, password);
    t.equal(await unixCrypt(password, `$${flag.slice(1)}$${salt}`), expected, `openssl passwd ${flag} -salt ${salt}`);
    t.ok(await verifyPassword(password, expected), `verifies ${expected}`);
    t.notOk(await verifyPassword(password.slice(0, -1), expected), 'a truncated password fails');
  }
});

t.test('unicode passwords are hashed as their UTF-8 bytes', needs('openssl'), async (t) => {
  const pw = 'Grüße, 世界 🌍';
  const stored = openssl('-6', 'unicode', pw);
  t.ok(await verifyPassword(pw, stored));
  // Same code points in another normalisation form are different bytes.
  t.notOk(await verifyPassword(pw.normalize('NFD'), stored));
  // Latin-1 bytes of the same text must not match.
  t.notOk(await verifyPassword(Buffer.from(pw, 'utf8').toString('latin1'), stored));
  const ours = await hashPassword(pw);
  t.ok(await verifyPassword(pw, ours));
  t.notOk(await verifyPassword(pw.normalize('NFD'), ours));
});

t.test('scrypt: round trip, format, salts differ, rehash decisions', async (t) => {
  const stored = await hashPassword('correct horse');
  t.match(stored, /^\$scrypt\$ln=15,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
  t.equal(hashScheme(stored), 'scrypt');
  t.ok(await verifyPassword('correct horse', stored));
  t.notOk(await verifyPassword('correct horsE', stored));
  t.notOk(await verifyPassword('', stored));
  t.not(await hashPassword('correct horse'), stored, 'random salt');
  t.notOk(needsRehash(stored), 'current parameters');
  t.ok(needsRehash(stored.replace('ln=15', 'ln=14')), 'other parameters');
  t.ok(needsRehash(MD5_VECTORS[0]![2]));
  t.ok(needsRehash(SHA_SPEC_VECTORS[7]![2]));
  t.ok(needsRehash('clear-text'));
  t.ok(needsRehash(''));
  t.same(SCRYPT_PARAMETERS, { ln: 15, r: 8, p: 1, keylen: 32, saltBytes: 16 });

  // A hash with other (cheaper) parameters still verifies: parameters come from the string.
  const cheap = scryptString('pw', 10, 8, 1);
  t.ok(await verifyPassword('pw', cheap));
  t.ok(needsRehash(cheap));
  // Corrupted or hostile strings are false, not exceptions.
  t.notOk(await verifyPassword('correct horse', stored.slice(0, -4)), 'truncated hash');
  t.notOk(await verifyPassword('pw', cheap.replace('ln=10', 'ln=30')), 'absurd memory cost');
  t.notOk(await verifyPassword('pw', '$scrypt$ln=10,r=8,p=1$$'), 'empty salt and hash');
  t.notOk(await verifyPassword('pw', '$scrypt$garbage'));
});

t.test('hashing takes a noticeable but bounded time', async (t) => {
  const start = process.hrtime.bigint();
  await hashPassword('timing');
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  t.ok(ms > 10, `a real work factor: one hash took ${ms.toFixed(0)} ms (its speed is measured in the figures, not asserted)`);
});

t.test('clear text, DES and unknown schemes', async (t) => {
  t.equal(hashScheme('secret'), 'clear');
  t.ok(isClearTextHash('secret'));
  t.ok(await verifyPassword('secret', 'secret'));
  t.notOk(await verifyPassword('Secret', 'secret'));
  t.notOk(await verifyPassword('secret ', 'secret'));
  t.notOk(await verifyPassword('', 'secret'));
  t.ok(await verifyPassword('pässwörd', 'pässwörd'));

  // An empty field locks the account rather than accepting an empty password.
  t.notOk(await verifyPassword('', ''));
  t.notOk(isVerifiable(''));
  t.notOk(clearTextEquals('', ''));

  // 13 characters of the crypt alphabet: DES crypt, which is not supported.
  t.equal(hashScheme('abJnggxhB/yWI'), 'des-crypt');
  t.notOk(isClearTextHash('abJnggxhB/yWI'));
  t.notOk(isVerifiable('abJnggxhB/yWI'));
  t.notOk(await verifyPassword('abJnggxhB/yWI', 'abJnggxhB/yWI'), 'not even compared as clear text');
  // vpasswd's separate clear-text field is compared without guessing a scheme.
  t.ok(clearTextEquals('abJnggxhB/yWI', 'abJnggxhB/yWI'));
  t.ok(clearTextEquals('x', 'x'));
  t.notOk(clearTextEquals('x', 'y'));

  for (const stored of ['$2b$10$abcdefghijklmnopqrstuu5bHc9XhKMw0mZlZCNr1Ygk1pbd.QGK', '$y$j9T$salt$hash', '$7$x', '$', '$1', '$md5$x']) {
    t.notOk(await verifyPassword('x', stored), `unknown scheme ${stored}`);
  }
  t.equal(hashScheme('$2b$10$x'), 'unknown');
  t.notOk(isVerifiable('$2b$10$x'));
  t.ok(isVerifiable('secret'));
  t.ok(isVerifiable(MD5_VECTORS[0]![2]));

  // Malformed crypt strings are false, not exceptions.
  t.notOk(await verifyPassword('x', '$1$saltsalt$'));
  t.notOk(await verifyPassword('x', '$6$rounds=abc$salt$xyz'));
  t.notOk(await verifyPassword('x', '$6$rounds=999999999$salt$xyz'), 'refused: too many rounds to check');
  t.notOk(await verifyPassword('x', '$5$sa\u00e9lt$xyz'), 'non-ASCII salt');
});

t.test('constant-time helpers and CRAM-MD5 / APOP digests', async (t) => {
  t.ok(constantTimeEqual('abc', 'abc'));
  t.notOk(constantTimeEqual('abc', 'abd'));
  t.notOk(constantTimeEqual('abc', 'abcd'), 'unequal lengths are fine');

  // RFC 2195 example.
  t.equal(cramMd5Digest('tanstaaftanstaaf', '<1896.697170952@postoffice.reston.mci.net>'), 'b913a602c7eda7a495b4e6e7334d3890');
  // RFC 1939 example.
  t.equal(apopDigest('<1896.697170952@dbc.mtview.ca.us>', 'tanstaaf'), 'c4c9334bac560ecc979e58001b3e22fb');
  // UTF-8 secrets: same as node's own HMAC/MD5 over the UTF-8 bytes.
  t.equal(cramMd5Digest('sécret', '<1.2@h>'), createHmac('md5', Buffer.from('sécret', 'utf8')).update('<1.2@h>').digest('hex'));
  t.equal(apopDigest('<1.2@h>', 'sécret'), createHash('md5').update(Buffer.from('<1.2@h>sécret', 'utf8')).digest('hex'));
});

/** An scrypt string with arbitrary parameters, built independently of hashPassword. */
function scryptString(password: string, ln: number, r: number, p: number): string {
  const salt = Buffer.from('0123456789abcdef');
  const key = scryptSync(password, salt, 32, { N: 2 ** ln, r, p });
  const b64 = (b: Buffer) => b.toString('base64').replace(/=+$/, '');
  return `$scrypt$ln=${ln},r=${r},p=${p}$${b64(salt)}$${b64(key)}`;
}
