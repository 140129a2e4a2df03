/** spamdyke building blocks: S25R regexes, spamdyke list formats, IP-in-rDNS. */
import t from 'tap';
import { s25rMatch } from '../../plugins/spamdyke/s25r.js';
import { addressList, ipList, listLines, rdnsList } from '../../plugins/spamdyke/lists.js';
import { containsIp, ipInCcRdns, rhsCandidates } from '../../plugins/spamdyke/rdns.js';
import { options } from '../../plugins/spamdyke/options.js';

t.test('S25R: the reference examples and the big providers', async (t) => {
  const table: Array<[string | undefined, number | undefined]> = [
    // matches
    ['p1234-ipad56.tokyo.ocn.ne.jp', 1],
    ['12345.example.net', 2],
    ['host.3com.example.co.jp', 3],
    ['h1.dyn2-3.example.com', 4],
    ['a1.b2.example.co.jp', 5],
    ['dsl-22.example.com', 6],
    ['ppp5.example.net', 6],
    ['adsl12.example.net', 6],
    ['PPP5.EXAMPLE.NET', 6],
    [undefined, 0],
    ['', 0],
    // known false positives: the big providers' outbound names match rule 1 (whitelist them)
    ['mail-xx1-f23.google.com', 1],
    ['a8-32.smtp-out.amazonses.com', 1],
    ['mail-db3eur04on0123.outbound.protection.outlook.com', 1],
    // must not match
    ['mail.example.com', undefined],
    ['pppoe-gw.example.net', undefined],
    ['ns1.example.com', undefined],
    ['mx01.example.co.jp', undefined],
    ['smtp.tokyo.ocn.ne.jp', undefined],
    ['mail.example.com.', undefined],
  ];
  for (const [name, rule] of table) t.equal(s25rMatch(name), rule, `${name ?? '(no PTR)'} → ${rule ?? 'no match'}`);
});

t.test('IP files: exact, prefix, octet range, CIDR, dotted mask, IPv6', async (t) => {
  const m = ipList(listLines('# spamdyke ip file\n11.22.33.44\n12.22.33\n13.22.33-44.55 # range\n14.0.0.0/8\n15.1.2.0/255.255.255.0\n2001:db8::/32\n16.1.\n'));
  t.equal(m.size, 7);
  t.equal(m.match('11.22.33.44'), '11.22.33.44');
  t.equal(m.match('11.22.33.45'), undefined);
  t.equal(m.match('12.22.33.200'), '12.22.33', 'prefix without dot');
  t.equal(m.match('12.22.34.1'), undefined);
  t.equal(m.match('13.22.40.55'), '13.22.33-44.55', 'octet range');
  t.equal(m.match('13.22.45.55'), undefined);
  t.equal(m.match('13.22.40.56'), undefined);
  t.equal(m.match('14.200.1.1'), '14.0.0.0/8');
  t.equal(m.match('15.1.2.99'), '15.1.2.0/255.255.255.0');
  t.equal(m.match('15.1.3.99'), undefined);
  t.equal(m.match('16.1.9.9'), '16.1.', 'prefix with dot');
  t.equal(m.match('::ffff:11.22.33.44'), '11.22.33.44', 'IPv4-mapped');
  t.equal(m.match('2001:db8::1'), '2001:db8::/32');
  t.equal(m.match('2001:db9::1'), undefined);
  t.throws(() => ipList(['1.2.3.300']), /1\.2\.3\.300/);
  t.throws(() => ipList(['not-an-ip']), /not-an-ip/);
});

t.test('rDNS files: exact names and .domain', async (t) => {
  const m = rdnsList(listLines('host.example.com\n.example.net\n'));
  t.equal(m.match('HOST.example.com.'), 'host.example.com');
  t.equal(m.match('other.example.com'), undefined);
  t.equal(m.match('a.b.example.net'), '.example.net');
  t.equal(m.match('example.net'), '.example.net');
  t.equal(m.match('badexample.net'), undefined);
});

t.test('sender/recipient files: addresses and @domain with subdomains', async (t) => {
  const m = addressList(listLines('Joe@Example.com\n@example.org\n'));
  t.equal(m.match('joe@example.com'), 'joe@example.com');
  t.equal(m.match('bob@example.com'), undefined);
  t.equal(m.match('x@example.org'), '@example.org');
  t.equal(m.match('x@mail.example.org'), '@example.org');
  t.equal(m.match('x@notexample.org'), undefined);
});

t.test('list files: only the first 65536 lines are read', async (t) => {
  const lines = Array.from({ length: 65_536 }, (_, i) => `a${i}@example.com`);
  lines.push('late@example.com');
  const m = addressList(listLines(lines.join('\n')));
  t.equal(m.match('a0@example.com'), 'a0@example.com');
  t.equal(m.match('late@example.com'), undefined);
});

t.test('IP address and country code in the rDNS name', async (t) => {
  t.ok(ipInCcRdns('1-2-3-4.dyn.example.de', '1.2.3.4'), 'dashes, in order');
  t.ok(ipInCcRdns('4.3.2.1.pool.example.fr', '1.2.3.4'), 'reversed');
  t.ok(ipInCcRdns('p001002003004.example.jp', '1.2.3.4'), 'zero-padded');
  t.ok(ipInCcRdns('host-01020304.example.it', '1.2.3.4'), 'hex');
  t.notOk(ipInCcRdns('1-2-3-4.dyn.example.com', '1.2.3.4'), 'no country code');
  t.notOk(ipInCcRdns('mail.example.de', '1.2.3.4'), 'no IP');
  t.notOk(containsIp('11-2-3-4.example.de', '1.2.3.4'));
  t.same(rhsCandidates('a.b.c.example.co.jp'), ['b.c.example.co.jp', 'c.example.co.jp', 'example.co.jp', 'co.jp'], 'at most four, the shortest kept');
  t.same(rhsCandidates('mail.example.com'), ['mail.example.com', 'example.com']);
});

t.test('options: spamdyke defaults and reply validation', async (t) => {
  const o = options.parse({});
  t.equal(o.graylist.enabled, false);
  t.equal(o.graylist.minDelay, 300);
  t.equal(o.maxRecipients, 0);
  t.notOk(options.safeParse({ replies: { s25r: { code: 421 } } }).success, '421 would close the connection');
  t.notOk(options.safeParse({ replies: { s25r: { code: 450, enhanced: '5.7.1' } } }).success);
  t.ok(options.safeParse({ replies: { s25r: { code: 554, text: 'go away' } } }).success);
  t.notOk(options.safeParse({ rejectSender: ['not-local'] }).success, 'only no-mx is implemented');
});
