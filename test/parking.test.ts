/**
 * Parking (core/smtp/parking.ts): a greeted client that says nothing is held
 * as a socket and a compact record, and every protection holds as for a
 * whole connection: the same timeout replies, maxConnectionTime,
 * maxConnections counting it, commands sent at once or split, a drain.
 * Listeners here keep the default firstCommandTimeout (30 s) or one of 3 s,
 * both long enough to park (MIN_PARKED_IDLE_MS); 1 s is not.
 */
import net from 'node:net';
import { EventEmitter } from 'node:events';
import t from 'tap';
import { startTestServer } from '../core/testing/index.js';
import { MIN_PARKED_IDLE_MS, ParkingLot, type Parked } from '../core/smtp/parking.js';

/** A raw client: everything the server sent, and when it hung up. */
function rawClient(port: number): Promise<{ socket: net.Socket; text(): string; until(re: RegExp, ms?: number): Promise<string>; closed: Promise<void> }> {
  const socket = net.connect(port, '127.0.0.1');
  let received = '';
  socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const until = async (re: RegExp, ms = 8000) => {
    const end = Date.now() + ms;
    while (!re.test(received)) {
      if (Date.now() > end) throw new Error(`no ${re} in ${JSON.stringify(received)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return received;
  };
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve({ socket, text: () => received, until, closed }));
    socket.once('error', reject);
  });
}

t.test('the lot: data, a passed deadline and a close each hand the record back once', async (t) => {
  const events: string[] = [];
  const lot = new ParkingLot<Parked & { name: string }>(
    {
      data: (p, chunk) => events.push(`${p.name} data ${chunk.toString()}`),
      expired: (p) => events.push(`${p.name} expired`),
      closed: (p) => events.push(`${p.name} closed`),
      error: (p, err) => events.push(`${p.name} error ${err.message}`),
    },
    20,
  );
  // Stand-ins for sockets: the lot only listens, pauses and resumes.
  const fake = () => Object.assign(new EventEmitter(), { destroyed: false, pause() {}, resume() {} }) as unknown as net.Socket;
  const [a, b, c] = [fake(), fake(), fake()];
  lot.park({ socket: a, deadline: Date.now() + 60_000, name: 'a' });
  lot.park({ socket: b, deadline: Date.now() + 50, name: 'b' });
  lot.park({ socket: c, deadline: Date.now() + 60_000, name: 'c' });
  t.equal(lot.size, 3);
  a.emit('data', Buffer.from('EHLO x\r\n'));
  a.emit('data', Buffer.from('ignored: a is no longer parked'));
  c.emit('error', new Error('boom'));
  c.emit('close');
  await new Promise((r) => setTimeout(r, 150));
  t.same(events, ['a data EHLO x\r\n', 'c error boom', 'c closed', 'b expired']);
  t.equal(lot.size, 0, 'the lot is empty (and its interval stopped)');
});

t.test('a parked client times out with the same reply as one that is not parked', async (t) => {
  t.ok(MIN_PARKED_IDLE_MS <= 3000, 'a 3 s firstCommandTimeout is parked');
  const parked = await startTestServer({ listener: { limits: { firstCommandTimeout: '3s' } } });
  const whole = await startTestServer({ listener: { limits: { firstCommandTimeout: '1s' } } });
  t.teardown(async () => {
    await parked.close();
    await whole.close();
  });
  const started = Date.now();
  const [p, w] = await Promise.all([rawClient(parked.port), rawClient(whole.port)]);
  await Promise.all([p.closed, w.closed]);
  const elapsed = Date.now() - started;
  const strip = (s: string) => s.replace(/^220 .*\r\n/, '');
  t.equal(strip(p.text()), '421 4.4.2 Timeout - closing connection\r\n', 'the parked one: 421 and closed');
  t.equal(strip(p.text()), strip(w.text()), 'the same words as a whole connection says');
  t.ok(elapsed >= 2900 && elapsed < 4500, `after the 3 s timeout, at most a tick late (${elapsed} ms)`);
  await new Promise((r) => setTimeout(r, 100)); // the session ends after the socket's close
  t.ok(
    parked.logs.some((l) => l.event === 'close'),
    'the session ended (its close line logged)',
  );
});

t.test('a command right after the greeting, whole, pipelined or split, is answered as usual', async (t) => {
  const s = await startTestServer({ plugins: ['rcpthosts'] });
  t.teardown(() => s.close());
  const a = await rawClient(s.port);
  await a.until(/^220 /m);
  a.socket.write('EHLO client.example\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<postmaster@localhost>\r\nDATA\r\n');
  await a.until(/^354 /m);
  a.socket.write('Subject: parked\r\n\r\nhello\r\n.\r\nQUIT\r\n');
  await a.closed;
  t.match(a.text(), /^250 .*\r\n221 /m, 'pipelined after parking: accepted and quit');

  const b = await rawClient(s.port);
  await b.until(/^220 /m);
  b.socket.write('EH');
  await new Promise((r) => setTimeout(r, 50));
  b.socket.write('LO client.example\r\n');
  await b.until(/^250 /m);
  b.socket.write('QUIT\r\n');
  await b.closed;
  t.match(b.text(), /^250[ -]/m, 'a command split over two segments (the first unparks)');
  t.equal((await s.queued()).length, 1, 'the message was queued');
});

t.test('parked connections count towards maxConnections; maxConnectionTime ends a parked one', async (t) => {
  const s = await startTestServer({ listener: { limits: { maxConnections: 2, maxConnectionsPerIp: 0, maxConnectionTime: '800ms' } } });
  t.teardown(() => s.close());
  const a = await rawClient(s.port);
  const b = await rawClient(s.port);
  await Promise.all([a.until(/^220 /m), b.until(/^220 /m)]);
  const c = await rawClient(s.port);
  await c.closed;
  t.match(c.text(), /^421 4\.7\.0 .*Too many connections/, 'a third is refused while two are parked');
  await Promise.all([a.closed, b.closed]);
  t.match(a.text(), /\r\n421 4\.4\.2 Connection time limit reached, closing\r\n$/, 'the parked one is cut off at maxConnectionTime');
  t.ok(
    s.logs.some((l) => l.hook === 'connect' && l.code === 421 && /connection time limit/.test(String(l.reason))),
    'and it is logged as the decision it is',
  );
});

t.test('a parked client hanging up ends its session; a drain sends parked clients away', async (t) => {
  const s = await startTestServer();
  const a = await rawClient(s.port);
  await a.until(/^220 /m);
  a.socket.destroy();
  await new Promise((r) => setTimeout(r, 100));
  t.ok(
    s.logs.some((l) => l.event === 'close'),
    'the session of the client that left ended',
  );
  const b = await rawClient(s.port);
  await b.until(/^220 /m);
  await s.close();
  await b.closed;
  t.match(b.text(), /\r\n421 4\.3\.2 Server shutting down/, 'a parked client hears the drain 421');
});
