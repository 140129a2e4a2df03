/**
 * Mail client autoconfiguration (plugins/webadmin/autoconfig.ts) over real
 * HTTP: curl asks as Thunderbird and Outlook do, and Python's xml.etree reads
 * the answers, so a document that is not well-formed XML fails here.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import t, { type Test } from 'tap';
import { parseConfig } from '../core/config/load.js';
import type { Config } from '../core/index.js';
import { clientServers, emailFromAutodiscover, parseAddress, registerAutoconfig, xmlEscape } from '../plugins/webadmin/autoconfig.js';
import { needs, run } from './helpers.js';

const SITE = `
hostname: mail.example.net
dataDir: /tmp/yubin-autoconfig-unused
listeners:
  - name: smtp
    protocol: smtp
    listen: 0.0.0.0:25
  - name: submission
    protocol: smtp
    listen: 0.0.0.0:587
    tls: starttls
    requireAuth: true
  - name: smtps
    protocol: smtp
    listen: 0.0.0.0:465
    tls: implicit
    requireAuth: true
  - name: pop3
    protocol: pop3
    listen: 0.0.0.0:110
    tls: starttls
  - name: pop3s
    protocol: pop3
    listen: 0.0.0.0:995
    tls: implicit
  - name: http
    protocol: http
    listen: 127.0.0.1:8080
    serve: [metrics]
`;

function site(yaml = SITE): Config {
  return parseConfig(yaml, '/tmp/yubin-autoconfig/yubin.yaml').config;
}

async function start(t: Test, config: Config, before?: (app: FastifyInstance) => void): Promise<string> {
  const app = Fastify();
  before?.(app);
  registerAutoconfig(app, config);
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const addr = app.server.address();
  if (!addr || typeof addr === 'string') throw new Error('no port');
  return `http://127.0.0.1:${addr.port}`;
}

interface Http {
  status: number;
  contentType: string;
  body: string;
}

async function curl(t: Test, url: string, post?: { type: string; body: string }): Promise<Http> {
  const args = ['-s', '-w', '\n%{http_code} %{content_type}'];
  if (post) args.push('-H', `Content-Type: ${post.type}`, '--data-binary', '@-');
  const r = await run('curl', [...args, url], { input: post?.body ?? '' });
  t.equal(r.code, 0, `curl ${post ? 'POST' : 'GET'} ${new URL(url).pathname}`);
  const cut = r.stdout.lastIndexOf('\n');
  const [status, ...type] = r.stdout.slice(cut + 1).split(' ');
  return { status: Number(status), contentType: type.join(' '), body: r.stdout.slice(0, cut) };
}

/** Python reads the document with xml.etree and says what it found, as JSON. */
const READ_XML = String.raw`
import json, sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.buffer.read())
def local(tag): return tag.split('}')[-1]
if local(root.tag) == 'clientConfig':
    p = root.find('emailProvider')
    out = {'kind': 'clientConfig', 'version': root.get('version'), 'id': p.get('id'),
           'domains': [d.text for d in p.findall('domain')], 'displayName': p.findtext('displayName'), 'servers': []}
    for s in p:
        if s.tag in ('incomingServer', 'outgoingServer'):
            out['servers'].append({'dir': s.tag, 'type': s.get('type'), 'hostname': s.findtext('hostname'), 'port': int(s.findtext('port')),
                                   'socketType': s.findtext('socketType'), 'username': s.findtext('username'), 'authentication': s.findtext('authentication')})
else:
    ns = {'a': 'http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006',
          'o': 'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'}
    assert local(root.tag) == 'Autodiscover' and root.tag.startswith('{' + ns['a'] + '}'), root.tag
    acct = root.find('o:Response/o:Account', ns)
    out = {'kind': 'autodiscover', 'accountType': acct.findtext('o:AccountType', namespaces=ns), 'action': acct.findtext('o:Action', namespaces=ns), 'protocols': []}
    for p in acct.findall('o:Protocol', ns):
        out['protocols'].append({local(c.tag): c.text for c in p})
print(json.dumps(out))
`;

interface ClientConfigDoc {
  version: string;
  id: string;
  domains: string[];
  displayName: string;
  servers: Array<{ dir: string; type: string; hostname: string; port: number; socketType: string; username: string; authentication: string }>;
}

interface AutodiscoverDoc {
  accountType: string;
  action: string;
  /** Each Protocol's child elements by name. */
  protocols: Array<Record<string, string>>;
}

async function readXml<T extends ClientConfigDoc | AutodiscoverDoc>(t: Test, xml: string): Promise<T> {
  const r = await run('python3', ['-c', READ_XML], { input: xml });
  t.equal(r.code, 0, `python3 parses the XML${r.stderr ? `: ${r.stderr}` : ''}`);
  return JSON.parse(r.stdout) as T;
}

const OUTLOOK_REQUEST = (address: string) => `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>${address}</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>`;

const tools = needs('curl', 'python3');

t.test('Thunderbird autoconfig: pop3 and submission listeners, TLS first, port 25 not offered', tools, async (t) => {
  const base = await start(t, site());
  for (const path of ['/.well-known/autoconfig/mail/config-v1.1.xml', '/mail/config-v1.1.xml']) {
    const r = await curl(t, `${base}${path}?emailaddress=${encodeURIComponent('Alice@Example.ORG')}`);
    t.equal(r.status, 200, `${path}: 200`);
    t.equal(r.contentType, 'application/xml; charset=utf-8');
    const doc = await readXml<ClientConfigDoc>(t, r.body);
    t.equal(doc.version, '1.1');
    t.equal(doc.id, 'example.org', 'emailProvider id is the address domain, lower case');
    t.same(doc.domains, ['example.org']);
    t.match(doc.displayName, /example\.org/);
    const common = { hostname: 'mail.example.net', username: '%EMAILADDRESS%', authentication: 'password-cleartext' };
    t.same(doc.servers, [
      { dir: 'incomingServer', type: 'pop3', port: 995, socketType: 'SSL', ...common },
      { dir: 'incomingServer', type: 'pop3', port: 110, socketType: 'STARTTLS', ...common },
      { dir: 'outgoingServer', type: 'smtp', port: 465, socketType: 'SSL', ...common },
      { dir: 'outgoingServer', type: 'smtp', port: 587, socketType: 'STARTTLS', ...common },
    ]);
    t.notOk(doc.servers.some((s) => s.port === 25), 'port 25 (MX, no AUTH) is not offered');
  }
});

t.test('Outlook autodiscover: POST with an XML body, both path spellings, GET for trying by hand', tools, async (t) => {
  const base = await start(t, site());
  const expected = [
    { Type: 'POP3', Port: '995', SSL: 'on', Encryption: 'SSL' },
    { Type: 'POP3', Port: '110', SSL: 'on', Encryption: 'TLS' },
    { Type: 'SMTP', Port: '465', SSL: 'on', Encryption: 'SSL' },
    { Type: 'SMTP', Port: '587', SSL: 'on', Encryption: 'TLS' },
  ];
  const check = async (r: Http, what: string) => {
    t.equal(r.status, 200, `${what}: 200`);
    t.equal(r.contentType, 'application/xml; charset=utf-8');
    const doc = await readXml<AutodiscoverDoc>(t, r.body);
    t.equal(doc.accountType, 'email');
    t.equal(doc.action, 'settings');
    t.same(
      doc.protocols.map((p) => ({ Type: p.Type, Port: p.Port, SSL: p.SSL, Encryption: p.Encryption })),
      expected,
      `${what}: the protocols, TLS first, no port 25`,
    );
    for (const p of doc.protocols) {
      t.equal(p.Server, 'mail.example.net');
      t.equal(p.LoginName, 'bob@example.org');
      t.equal(p.SPA, 'off');
      t.equal(p.AuthRequired, 'on');
    }
  };
  await check(await curl(t, `${base}/autodiscover/autodiscover.xml`, { type: 'text/xml', body: OUTLOOK_REQUEST('bob@example.org') }), 'POST text/xml');
  await check(await curl(t, `${base}/Autodiscover/Autodiscover.xml`, { type: 'application/xml; charset=utf-8', body: OUTLOOK_REQUEST('bob@EXAMPLE.org') }), 'POST application/xml');
  await check(await curl(t, `${base}/autodiscover/autodiscover.xml?emailaddress=bob@example.org`), 'GET');
});

t.test('values are escaped in the XML', tools, async (t) => {
  const base = await start(t, site());
  const address = "o'brien&co@example.org";
  const r = await curl(t, `${base}/autodiscover/autodiscover.xml`, { type: 'text/xml', body: OUTLOOK_REQUEST(xmlEscape(address)) });
  t.equal(r.status, 200);
  t.match(r.body, /o&apos;brien&amp;co@example\.org/);
  const doc = await readXml<AutodiscoverDoc>(t, r.body);
  t.equal(doc.protocols[0]?.LoginName, address, 'the login name read back is the address as given');
});

t.test('a missing or malformed address is 400 with one line; a big body is refused', tools, async (t) => {
  const base = await start(t, site());
  const oneLine = (r: Http, what: string) => {
    t.equal(r.status, 400, `${what}: 400`);
    t.match(r.contentType, /^text\/plain/);
    t.match(r.body, /^[^\n]+\n$/, `${what}: one line (${JSON.stringify(r.body)})`);
  };
  oneLine(await curl(t, `${base}/.well-known/autoconfig/mail/config-v1.1.xml`), 'autoconfig without emailaddress');
  for (const bad of ['nobody', 'a@b@example.org', '@example.org', 'x@localhost', '<script>@example.org', 'a b@example.org', 'x@exa_mple.org']) {
    oneLine(await curl(t, `${base}/mail/config-v1.1.xml?emailaddress=${encodeURIComponent(bad)}`), `autoconfig ${bad}`);
    oneLine(await curl(t, `${base}/autodiscover/autodiscover.xml`, { type: 'text/xml', body: OUTLOOK_REQUEST(xmlEscape(bad)) }), `autodiscover ${bad}`);
  }
  oneLine(await curl(t, `${base}/autodiscover/autodiscover.xml`, { type: 'text/xml', body: '<Autodiscover><Request></Request></Autodiscover>' }), 'no EMailAddress');
  oneLine(await curl(t, `${base}/autodiscover/autodiscover.xml`, { type: 'text/xml', body: '' }), 'empty body');
  oneLine(await curl(t, `${base}/autodiscover/autodiscover.xml`, { type: 'application/json', body: '{"EMailAddress":"bob@example.org"}' }), 'JSON body');
  oneLine(await curl(t, `${base}/autodiscover/autodiscover.xml`), 'GET without emailaddress');
  const big = await curl(t, `${base}/autodiscover/autodiscover.xml`, { type: 'text/xml', body: OUTLOOK_REQUEST('bob@example.org') + ' '.repeat(17 * 1024) });
  t.equal(big.status, 413, 'a body over 16 KiB: 413');
  t.match(big.body, /^[^\n]+\n$/, 'in one line');
});

t.test('the XML parser is scoped: an application XML parser elsewhere neither clashes nor changes what autodiscover reads', tools, async (t) => {
  const base = await start(t, site(), (app) => {
    app.addContentTypeParser(['text/xml', 'application/xml'], { parseAs: 'string' }, (_req, _body, done) => done(null, { parsedBy: 'app' }));
    app.post('/other', async (req) => req.body);
  });
  const ours = await curl(t, `${base}/autodiscover/autodiscover.xml`, { type: 'text/xml', body: OUTLOOK_REQUEST('bob@example.org') });
  t.equal(ours.status, 200);
  const other = await curl(t, `${base}/other`, { type: 'application/xml', body: '<x/>' });
  t.same(JSON.parse(other.body), { parsedBy: 'app' }, "the app's own route keeps its parser");
});

t.test('which listeners are offered', async (t) => {
  const ports = (yaml: string) => clientServers(site(yaml)).map((s) => `${s.protocol}:${s.port}:${s.socketType}`);
  const head = 'hostname: mx.example.net\nlisteners:\n';
  const l = (name: string, protocol: string, port: number, extra = '') => `  - { name: ${name}, protocol: ${protocol}, listen: "0.0.0.0:${port}"${extra} }\n`;
  t.same(ports(head + l('smtp', 'smtp', 25) + l('pop3', 'pop3', 110)), [], 'plain port 25 and plain POP3 without allowInsecureAuth: nothing a password can go to');
  t.same(ports(head + l('smtp', 'smtp', 25, ', tls: starttls') + l('pop3', 'pop3', 110, ', allowInsecureAuth: true')), ['pop3:110:plain', 'smtp:25:STARTTLS'], 'no submission listener: the SMTP one that can take AUTH');
  t.same(
    ports(head + l('mx', 'smtp', 25, ', tls: starttls') + l('msa', 'smtp', 2587, ', tls: starttls') + l('plain', 'smtp', 2526, ', allowInsecureAuth: true, requireAuth: true')),
    ['smtp:2587:STARTTLS', 'smtp:2526:plain'],
    'submission by name or requireAuth, STARTTLS before plain; the MX port left out',
  );
  t.same(clientServers(site()).map((s) => s.listener), ['pop3s', 'pop3', 'smtps', 'submission']);
});

t.test('address and request parsing', async (t) => {
  t.same(parseAddress('Alice@Example.ORG'), { address: 'Alice@example.org', domain: 'example.org' });
  t.equal(parseAddress(['a@example.org']), undefined, 'a repeated query parameter is not an address');
  t.equal(parseAddress(`${'a'.repeat(65)}@example.org`), undefined, 'local part over 64');
  t.equal(emailFromAutodiscover('<a:EMailAddress xmlns:a="x"> bob@example.org </a:EMailAddress>'), 'bob@example.org', 'namespace prefix, spaces');
  t.equal(emailFromAutodiscover('<EMailAddress>o&apos;b&#38;c@example.org</EMailAddress>'), "o'b&c@example.org", 'entities decoded');
  t.equal(emailFromAutodiscover('<Request/>'), undefined);
  t.equal(xmlEscape('<a href="x">&\'\u0001'), '&lt;a href=&quot;x&quot;&gt;&amp;&apos;');
});
