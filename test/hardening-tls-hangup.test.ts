/**
 * Hardening (issue 18, defect 8): a client that asks for TLS and hangs up
 * before or during the handshake gives its connection slot back at once,
 * on every kind of listener. Before, POP3's STLS kept the session (a
 * CLOSE-WAIT socket) until the idle timeout, so 100 such clients filled the
 * listener.
 */
import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import { startTestServer } from '../core/testing/index.js';

const SLOTS = 20;

/** The first line the server sends on a new connection. */
function firstLine(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    const done = (line: string) => {
      socket.removeAllListeners('data');
      resolve(line);
    };
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const i = buf.indexOf('\r\n');
      if (i >= 0) done(buf.slice(0, i));
    });
    socket.once('close', () => done(buf || '(closed)'));
    socket.once('error', () => undefined);
  });
}

/** Reads until a line matching `re` arrives. */
function until(socket: net.Socket, re: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const line = buf.split('\r\n').find((l) => re.test(l));
      if (line !== undefined) {
        socket.removeAllListeners('data');
        resolve(line);
      }
    });
    socket.once('close', () => reject(new Error(`closed before ${re}: ${buf}`)));
  });
}

function open(port: number, secure: boolean): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = secure ? tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }) : net.connect({ host: '127.0.0.1', port });
    s.once(secure ? 'secureConnect' : 'connect', () => resolve(s));
    s.once('error', reject);
  });
}

const limits = { maxConnections: SLOTS, maxConnectionsPerIp: 0, idleTimeout: '5m', firstCommandTimeout: '5m' };

for (const kind of [
  { name: 'pop3 STLS', protocol: 'pop3', tls: 'starttls', ask: 'STLS\r\n', go: /^\+OK/, ready: /^\+OK/ },
  { name: 'smtp STARTTLS', protocol: 'smtp', tls: 'starttls', ask: 'EHLO client.example\r\nSTARTTLS\r\n', go: /^220 /, ready: /^220 / },
  { name: 'pop3s handshake', protocol: 'pop3', tls: 'implicit', ask: undefined, go: undefined, ready: /^\+OK/ },
  { name: 'smtps handshake', protocol: 'smtp', tls: 'implicit', ask: undefined, go: undefined, ready: /^220 / },
] as const) {
  t.test(`${kind.name}, then a hang-up, ${SLOTS} times: the slots are free at once`, async (t) => {
    const s = await startTestServer({ listeners: [{ name: 'l', protocol: kind.protocol, tls: kind.tls, allowInsecureAuth: true, limits }] });
    t.teardown(() => s.close());
    const port = s.ports.l!;
    let closedByServer = 0;
    await Promise.all(
      Array.from({ length: SLOTS }, async () => {
        const socket = net.connect({ host: '127.0.0.1', port });
        await new Promise((r) => socket.once('connect', r));
        socket.on('error', () => undefined);
        if (kind.ask) {
          const greeting = firstLine(socket);
          await greeting;
          const go = until(socket, kind.go!);
          socket.write(kind.ask);
          await go;
        } else {
          // Half a ClientHello: the handshake is under way, then the client is gone.
          socket.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xc8, 0x01]));
        }
        socket.end();
        // The server closes its side at once; a socket it keeps is cut off by the client later.
        const closed = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), 2_000);
          socket.once('close', () => {
            clearTimeout(timer);
            resolve(true);
          });
        });
        if (closed) closedByServer++;
        socket.destroy();
      }),
    );
    t.equal(closedByServer, SLOTS, 'the server closed every connection within 2 s of the hang-up');
    // A real client right after: served, not refused for want of a slot.
    const started = Date.now();
    let line = '';
    while (Date.now() - started < 3_000) {
      const c = await open(port, kind.tls === 'implicit');
      line = await firstLine(c);
      c.destroy();
      if (kind.ready.test(line)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    t.match(line, kind.ready, `a new client is greeted (${line})`);
    t.ok(Date.now() - started < 3_000, `within ${Date.now() - started} ms of the hang-ups, not at the idle timeout`);
  });
}
