/**
 * autorespond: the "should we reply" rules (RFC 3834 section 2), the times
 * a vacation starts and ends, the settings module (one SQLite file read by
 * the server while the CLI writes), the reply's headers, the core's
 * Delivery.send, and the plugin in a running server with a clock the test
 * moves: not before the start, once per sender, not after the end.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { answer, definePlugin, ManualClock, Tokens } from '../../core/index.js';
import { startTestServer } from '../../core/testing/index.js';
import { formatWhen, parseWhen } from '../../plugins/autorespond/dates.js';
import { buildReply, replySubject } from '../../plugins/autorespond/reply.js';
import { automaticSender, parseHeaderSection, shouldReply, type HeaderField } from '../../plugins/autorespond/rules.js';
import { isActive, normalizeAddress, VacationError, vacationState, Vacations } from '../../plugins/autorespond/settings.js';
import { sleep, tempDir } from '../helpers.js';
import { startSink } from '../peers/sink.js';

const h = (text: string): HeaderField[] => parseHeaderSection(text.replace(/\n/g, '\r\n'));
const ask = (sender: string, headers = '', recipient = 'alice@example.test') => shouldReply({ sender, recipient, headers: h(headers) });

t.test('should we reply: senders', async (t) => {
  t.same(ask('bob@remote.test', 'Subject: hi\n'), { reply: true }, 'a person writing to alice');
  t.same(ask(''), { reply: false, reason: 'null sender <>' });
  t.match(ask('MAILER-DAEMON@remote.test'), { reply: false, reason: /mailer-daemon@ is a mailer/ });
  t.match(ask('postmaster@remote.test'), { reply: false, reason: /postmaster@/ });
  t.match(ask('owner-linux-kernel@vger.test'), { reply: false, reason: /owner-\*/ });
  t.match(ask('users-request@lists.test'), { reply: false, reason: /\*-request/ });
  t.match(ask('users-bounces+alice=example.test@lists.test'), { reply: false, reason: /bounce address/ }, "mailman's VERP");
  t.match(ask('list-return-42-alice=example.test@lists.test'), { reply: false, reason: /return path/ }, "ezmlm's VERP");
  t.match(ask('no-reply@shop.test'), { reply: false });
  t.match(ask('Alice@Example.test'), { reply: false, reason: 'sender is the recipient' });
  t.match(ask('not-an-address'), { reply: false, reason: /not an address/ });
  t.equal(automaticSender('requester@remote.test'), undefined, 'a name that only starts like one is a person');
  t.equal(automaticSender('owner@remote.test'), undefined);
  t.equal(automaticSender('bob+owner-stuff@remote.test'), undefined, 'only the part before + counts');
});

t.test('should we reply: headers (RFC 3834 section 2)', async (t) => {
  const bob = (headers: string) => ask('bob@remote.test', headers);
  for (const p of ['bulk', 'list', 'junk', 'Bulk']) t.match(bob(`Precedence: ${p}\n`), { reply: false, reason: `Precedence: ${p}` });
  t.same(bob('Precedence: first-class\n'), { reply: true });
  t.match(bob('List-Id: Users <users.lists.test>\n'), { reply: false, reason: /List-Id header/ });
  t.match(bob('List-Unsubscribe: <mailto:u@lists.test>\n'), { reply: false, reason: /List-Unsubscribe/ });
  t.match(bob('Mailing-List: contact users-help@lists.test; run by ezmlm\n'), { reply: false, reason: /Mailing-List/ });
  t.same(bob('Auto-Submitted: no\n'), { reply: true }, 'Auto-Submitted: no is a person');
  t.same(bob('Auto-Submitted: No (typed by hand)\n'), { reply: true });
  for (const a of ['auto-replied', 'auto-generated', 'auto-notified; owner-email="x@y"', 'something-new']) {
    t.match(bob(`Auto-Submitted: ${a}\n`), { reply: false, reason: /^Auto-Submitted: / }, a);
  }
  t.match(bob('X-Spam-Flag: YES\n'), { reply: false, reason: 'X-Spam-Flag: YES' });
  t.same(bob('X-Spam-Flag: NO\n'), { reply: true });
  t.match(bob('X-Auto-Response-Suppress: OOF, DR\n'), { reply: false });
  t.match(bob('Subject: x\nPrecedence:\n  bulk\n'), { reply: false, reason: 'Precedence: bulk' }, 'a folded header is unfolded');
  t.same(bob('Subject: about List-Id: and Precedence: bulk\n'), { reply: true }, 'names in a value are not headers');
  t.same(bob('Subject: x\n\nList-Id: in the body\n'), { reply: true }, 'the body is not read');
});

t.test('start and end as typed', async (t) => {
  const now = Date.UTC(2026, 11, 4, 12);
  t.equal(parseWhen('now', 'start', now), now);
  t.equal(parseWhen('2026-12-20', 'start'), new Date(2026, 11, 20).getTime(), 'a start date: its first moment, local time');
  t.equal(parseWhen('2026-12-31', 'end'), new Date(2027, 0, 1).getTime(), 'an end date: through that day');
  t.equal(parseWhen('2026-12-20T09:30', 'start'), new Date(2026, 11, 20, 9, 30).getTime());
  t.equal(parseWhen('2026-12-20 09:30:15', 'end'), new Date(2026, 11, 20, 9, 30, 15).getTime(), 'a time is that time, as start or end');
  t.equal(parseWhen('2026-12-20T09:30Z', 'start'), Date.UTC(2026, 11, 20, 9, 30));
  t.equal(parseWhen('2026-12-20T09:30+09:00', 'start'), Date.UTC(2026, 11, 20, 0, 30));
  t.equal(parseWhen('2026-12-20T09:30-0500', 'start'), Date.UTC(2026, 11, 20, 14, 30));
  t.equal(parseWhen('2028-02-29', 'start'), new Date(2028, 1, 29).getTime(), 'a leap day');
  for (const bad of ['2026-02-29', '2026-13-01', '2026-12-32', '2026-12-20T24:00', '2026-12-20T09:60', '20.12.2026', 'tomorrow', '', '2026-12-20T09:30+25:00', '1969-12-31']) {
    t.equal(parseWhen(bad, 'start'), undefined, `refused: ${JSON.stringify(bad)}`);
  }
  t.match(formatWhen(new Date(2026, 11, 20, 9, 5).getTime()), /^2026-12-20 09:05 [+-]\d\d:\d\d$/);
});

t.test('a vacation is active from its start (inclusive) until its end (exclusive), when on', async (t) => {
  const v = { enabled: true, start: 1000, end: 2000, body: 'away\n' };
  t.equal(vacationState(v, 999), 'scheduled');
  t.equal(vacationState(v, 1000), 'active');
  t.equal(vacationState(v, 1999), 'active');
  t.equal(vacationState(v, 2000), 'ended');
  t.equal(vacationState({ ...v, enabled: false }, 1500), 'off');
  t.ok(isActive({ enabled: true, body: 'x' }, 0), 'open at both ends');
  t.ok(isActive({ enabled: true, end: 5, body: 'x' }, -1e12), 'open start');
  t.ok(isActive({ enabled: true, start: 5, body: 'x' }, 1e15), 'open end');
});

t.test('settings: get, set, clear; a new set is a new period; the reply claim is durable and single', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'autorespond.sqlite');
  const a = new Vacations(file);
  const b = new Vacations(file); // another process: the CLI beside the server
  t.teardown(() => {
    a.close();
    b.close();
  });
  t.equal(normalizeAddress(' <Alice@Example.TEST.> '), 'alice@example.test');
  for (const bad of ['alice', '@example.test', 'alice@', 'a b@example.test', 'alice@exa_mple.test', 'alice@localhost', '.alice@example.test', 'al..ice@example.test']) {
    t.equal(normalizeAddress(bad), undefined, `not an address: ${bad}`);
  }
  t.equal(a.get('alice@example.test'), undefined);
  const v1 = a.set('Alice@Example.test', { enabled: true, start: 1000, end: 5000, subject: ' Away ', body: 'I am away.\r\nBack soon.\n\n\n' });
  t.match(v1, { address: 'alice@example.test', enabled: true, start: 1000, end: 5000, subject: 'Away', body: 'I am away.\nBack soon.\n' });
  t.same(b.get('alice@example.test'), v1, 'the other connection sees it at once');

  t.ok(b.claimReply(v1, 'Bob@Remote.test', 1500), 'the first message from bob is answered');
  t.notOk(a.claimReply(v1, 'bob@remote.test', 1600), 'the second is not, whoever asks');
  a.recordReply(v1, 'bob@remote.test', 'QID1');
  t.same(a.replies('alice@example.test'), [{ sender: 'bob@remote.test', at: 1500, queueId: 'QID1' }]);
  t.ok(a.claimReply(v1, 'carol@remote.test', 1700));
  a.releaseReply(v1, 'carol@remote.test');
  t.ok(a.claimReply(v1, 'carol@remote.test', 1800), 'a reply that could not be queued is released');

  const v2 = b.set('alice@example.test', { enabled: true, body: 'Still away.' });
  t.not(v2.period, v1.period, 'a new set is a new period');
  t.same(a.replies('alice@example.test'), [], 'whom the old period answered is forgotten');
  t.notOk(a.claimReply(v1, 'dave@remote.test', 1900), 'a claim for the old period is refused');
  t.ok(a.claimReply(v2, 'bob@remote.test', 2000), 'bob gets a reply again in the new period');
  t.match(a.get('alice@example.test'), { start: undefined, end: undefined, subject: undefined, body: 'Still away.\n' });

  t.throws(() => a.set('alice@example.test', { enabled: true, start: 5000, end: 5000, body: 'x' }), VacationError, 'end must be after start');
  t.throws(() => a.set('alice@example.test', { enabled: true, body: ' \n\n' }), /message text is empty/);
  t.throws(() => a.set('alice@example.test', { enabled: true, subject: 'two\nlines', body: 'x' }), /one line/);
  t.throws(() => a.set('alice@example.test', { enabled: true, start: NaN, body: 'x' }), /not a time/);
  t.throws(() => a.set('alice', { enabled: true, body: 'x' }), /invalid address: alice/);
  t.throws(() => a.get('nope'), VacationError);

  b.set('zed@example.test', { enabled: false, body: 'later' });
  t.same(a.list().map((v) => [v.address, v.enabled]), [
    ['alice@example.test', true],
    ['zed@example.test', false],
  ]);
  t.ok(a.clear('alice@example.test'));
  t.notOk(a.clear('alice@example.test'), 'nothing left to clear');
  t.equal(b.get('alice@example.test'), undefined);
});

t.test('the reply: RFC 3834 headers, Auto: subject, threading', async (t) => {
  const original = h('Subject: Lunch on Friday?\nMessage-ID: <m2@remote.test>\nReferences: <m0@remote.test>\n  <m1@remote.test>\n');
  t.equal(replySubject(undefined, original), 'Auto: Lunch on Friday?');
  t.equal(replySubject(undefined, []), 'Auto: (no subject)');
  t.equal(replySubject('Away until January', original), 'Away until January');
  const text = (await buildReply({ from: 'alice@example.test', to: 'bob@remote.test', subject: undefined, body: 'Back in January.\n', original, hostname: 'mx.example.test', now: Date.UTC(2026, 11, 24) })).toString();
  const head = h(text.slice(0, text.indexOf('\r\n\r\n') + 2));
  const get = (n: string) => head.find((x) => x.name.toLowerCase() === n.toLowerCase())?.value;
  t.equal(get('From'), 'alice@example.test');
  t.equal(get('To'), 'bob@remote.test');
  t.equal(get('Subject'), 'Auto: Lunch on Friday?');
  t.equal(get('Auto-Submitted'), 'auto-replied');
  t.equal(get('In-Reply-To'), '<m2@remote.test>');
  t.equal(get('References'), '<m0@remote.test> <m1@remote.test> <m2@remote.test>');
  t.match(get('Message-ID'), /^<[^<>@\s]+@mx\.example\.test>$/);
  t.equal(get('Date'), 'Thu, 24 Dec 2026 00:00:00 +0000');
  t.match(text, /\r\n\r\nBack in January\.\r\n/);
  const bare = (await buildReply({ from: 'alice@example.test', to: 'bob@remote.test', subject: 'Grüße', body: 'Schöne Feiertage\n', original: [], hostname: 'mx.test', now: 0 })).toString();
  t.notMatch(bare, /In-Reply-To|References/, 'no Message-ID to answer: no threading headers');
  t.match(bare, /Subject: =\?UTF-8\?Q\?Gr=C3=BC=C3=9Fe\?=/, 'a non-ASCII subject in RFC 2047 words');
  t.match(bare, /Content-Transfer-Encoding: quoted-printable/);
  t.ok(/^[\x00-\x7f]*$/.test(bare), 'the whole reply is ASCII');
});

t.test('Delivery.send: a deliver plugin queues a new message with its own envelope', async (t) => {
  const sink = await startSink();
  t.teardown(() => sink.close());
  const errors: string[] = [];
  const sender = definePlugin({
    name: 'sender-test',
    setup: () => ({
      hooks: {
        verify: () => answer.continue(),
        async deliver({ delivery }) {
          if (delivery.recipient.local !== 'trigger') return answer.continue();
          for (const bad of [{ sender: '', recipients: [] }, { sender: 'not an address', recipients: ['x@remote.test'] }, { sender: '', recipients: ['<x@remote.test>'] }]) {
            await delivery.send({ ...bad, message: 'x' }).then(
              () => errors.push('accepted'),
              (err: Error) => errors.push(err.message),
            );
          }
          const id = await delivery.send({ sender: '', recipients: ['notice@remote.test'], message: 'Subject: notice\nAuto-Submitted: auto-generated\n\nline one\nline two' });
          return answer.accept(`sent ${id}`);
        },
      },
    }),
  });
  const server = await startTestServer({
    deliver: true,
    plugins: ['rcpthosts'],
    deliveryPlugins: [sender, 'maildir'],
    config: { localDomains: ['example.test'], delivery: { routes: { 'remote.test': { host: '127.0.0.1', port: sink.port, tls: 'none' } } } },
  });
  t.teardown(() => server.close());
  const c = await server.connect();
  await c.ehlo('client.test');
  const r = await c.mail({ from: 'someone@remote.test', to: 'trigger@example.test', data: 'Subject: go\r\n\r\ngo\r\n' });
  t.equal(r.data?.code, 250);
  await waitFor(() => sink.messages.length === 1);
  await server.server.queue.idle();
  t.same(errors, ['send needs at least one recipient', 'send: bad address "not an address"', 'send: bad address "<x@remote.test>"']);
  const m = sink.messages[0]!;
  t.equal(m.from, '', 'the null sender');
  t.same(m.to, ['notice@remote.test']);
  const sent = server.logs.find((l) => l.event === 'send');
  t.match(sent, { sender: '', to: ['notice@remote.test'], sentId: /^[0-9A-Z]+$/ });
  t.match(server.logs.find((l) => l.event === 'delivery' && l.rcpt === 'trigger@example.test'), { text: new RegExp(`sent ${String(sent?.sentId)}`) }, 'send resolved with the new queue id');
  t.match(m.data, /^Received: \(yubin send for \S+\); .+\r\nSubject: notice\r\nAuto-Submitted: auto-generated\r\n\r\nline one\r\nline two\r\n$/, 'a Received line on top, CRLF line ends');
});

t.test('autorespond must come before the mailbox plugin in delivery.plugins', async (t) => {
  await t.rejects(startTestServer({ deliveryPlugins: ['maildir', 'autorespond'] }), /autorespond must come before maildir/);
});

interface Rig {
  readonly clock: ManualClock;
  readonly vacations: Vacations;
  readonly sinkMessages: () => ReadonlyArray<{ from: string; to: string[]; data: string }>;
  send(from: string, data: string): Promise<void>;
  decisions(): Array<Record<string, unknown>>;
  inbox(): Promise<string[]>;
}

async function rig(t: Test): Promise<Rig> {
  const sink = await startSink();
  const clock = new ManualClock(Date.UTC(2026, 11, 1, 12));
  const server = await startTestServer({
    deliver: true,
    plugins: ['rcpthosts'],
    deliveryPlugins: ['autorespond', 'maildir'],
    config: { localDomains: ['example.test'], delivery: { routes: { 'remote.test': { host: '127.0.0.1', port: sink.port, tls: 'none' } } } },
    configure: (c) => c.register(Tokens.Clock, { useValue: clock }),
  });
  const vacations = new Vacations(path.join(server.dataDir, 'autorespond.sqlite'));
  t.teardown(async () => {
    vacations.close();
    await server.close();
    await sink.close();
  });
  const c = await server.connect();
  await c.ehlo('client.test');
  return {
    clock,
    vacations,
    sinkMessages: () => sink.messages,
    async send(from, data) {
      const r = await c.mail({ from, to: 'alice@example.test', data });
      t.equal(r.data?.code, 250, `accepted from <${from}>`);
      await server.server.queue.idle();
      // The reply is queued during alice's delivery and goes out after it.
      await server.server.queue.idle();
    },
    decisions: () => server.logs.filter((l) => l.plugin === 'autorespond'),
    inbox: () => readdir(path.join(server.dataDir, 'mail/example.test/alice/Maildir/new')).catch(() => []),
  };
}

async function waitFor(test: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!test()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(20);
  }
}

t.test('in a server: nothing before the start, one reply per sender, nothing after the end; the mailbox gets all', async (t) => {
  const r = await rig(t);
  const day = 86_400_000;
  const now = r.clock.now();
  r.vacations.set('alice@example.test', { enabled: true, start: now + day, end: now + 3 * day, body: 'Back on the 4th.' });
  const mail = (subject: string) => `Subject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@remote.test>\r\n\r\nhello\r\n`;

  await r.send('bob@remote.test', mail('too early'));
  t.equal(r.sinkMessages().length, 0, 'not started yet: no reply');
  t.match(r.decisions().at(-1), { level: 20, decision: 'not-replied', reason: 'vacation scheduled', rcpt: 'alice@example.test', sender: 'bob@remote.test' });

  r.clock.advance(day);
  await r.send('bob@remote.test', mail('first'));
  await waitFor(() => r.sinkMessages().length === 1);
  const reply = r.sinkMessages()[0]!;
  t.equal(reply.from, '', 'from the null sender');
  t.same(reply.to, ['bob@remote.test']);
  t.match(reply.data, /\r\nSubject: Auto: first\r\n/);
  t.match(reply.data, /\r\nIn-Reply-To: <first@remote\.test>\r\n/);
  t.match(reply.data, /\r\nAuto-Submitted: auto-replied\r\n/);
  t.match(reply.data, /\r\n\r\nBack on the 4th\.\r\n/);
  const replied = r.decisions().find((l) => l.decision === 'replied');
  t.match(replied, { level: 30, id: /\S/, rcpt: 'alice@example.test', sender: 'bob@remote.test', replyId: /\S/ });

  await r.send('bob@remote.test', mail('second'));
  await r.send('bob@remote.test', 'List-Id: <users.lists.test>\r\nSubject: list\r\n\r\nhi\r\n');
  await r.send('', mail('bounce'));
  await r.send('carol@remote.test', 'Subject: spam\r\nX-Spam-Flag: YES\r\n\r\nbuy\r\n');
  await sleep(200);
  t.equal(r.sinkMessages().length, 1, 'no other reply');
  t.same(
    r.decisions()
      .filter((l) => l.decision === 'not-replied' && l.level === 30)
      .map((l) => l.reason),
    ['already replied to this sender in this vacation period', 'List-Id header: list mail', 'null sender <>', 'X-Spam-Flag: YES'],
  );

  await r.send('carol@remote.test', mail('from carol'));
  await waitFor(() => r.sinkMessages().length === 2);
  t.same(r.sinkMessages()[1]!.to, ['carol@remote.test'], 'another sender gets her own reply');

  r.clock.advance(2 * day);
  await r.send('dave@remote.test', mail('too late'));
  await sleep(200);
  t.equal(r.sinkMessages().length, 2, 'ended: no reply');
  t.match(r.decisions().at(-1), { decision: 'not-replied', reason: 'vacation ended' });
  t.equal((await r.inbox()).length, 8, 'alice got every message');
});
