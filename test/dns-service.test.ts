/** The DNS service's three answers for PTR and FCrDNS, against a loopback DNS server. */
import t from 'tap';
import { NodeDns } from '../core/index.js';
import { startDnsServer } from './peers/dns.js';

t.test('PTR: found, none, and a SERVFAIL reported as failed (never as "no PTR")', async (t) => {
  const dns = await startDnsServer({
    '10.0.0.127.in-addr.arpa': { PTR: ['mail.example.com'] },
    'mail.example.com': { A: ['127.0.0.10'] },
    '11.0.0.127.in-addr.arpa': { PTR: ['liar.example.com'] },
    'liar.example.com': { A: ['192.0.2.1'] },
    '12.0.0.127.in-addr.arpa': { servfail: true },
    '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa': { PTR: ['v6.example.com'] },
  });
  t.teardown(() => dns.close());
  const d = new NodeDns({ servers: [dns.address], timeout: 1000, tries: 1 });
  t.same(await d.ptr('127.0.0.10'), { kind: 'found', records: ['mail.example.com'] });
  t.match(await d.ptr('127.0.0.99'), { kind: 'none' });
  t.match(await d.ptr('127.0.0.12'), { kind: 'failed' }, 'SERVFAIL is a failure');
  t.same(await d.ptr('::1'), { kind: 'found', records: ['v6.example.com'] }, 'IPv6 through ip6.arpa nibbles');
  t.same(await d.fcrdns('127.0.0.10'), { kind: 'confirmed', name: 'mail.example.com', names: ['mail.example.com'] });
  t.same(await d.fcrdns('127.0.0.11'), { kind: 'unconfirmed', names: ['liar.example.com'] });
  t.same(await d.fcrdns('127.0.0.99'), { kind: 'none' });
  t.match(await d.fcrdns('127.0.0.12'), { kind: 'failed' });
});
