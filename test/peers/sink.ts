/**
 * A scriptable SMTP sink on loopback (smtp-server): records every message
 * and answers RCPT and DATA as the test says, e.g. 451 first and 250 after.
 */
import { SMTPServer, type SMTPServerAddress } from 'smtp-server';

export interface SinkMessage {
  readonly from: string;
  readonly to: string[];
  readonly data: string;
  /** MAIL's parameters (RET, ENVID, REQUIRETLS...) and each RCPT's (NOTIFY, ORCPT), as received. */
  readonly mailParams: Record<string, string | true>;
  readonly rcptParams: Array<Record<string, string | true>>;
}

export interface SinkBehaviour {
  /** Offer STARTTLS with this key pair, and refuse MAIL before it. */
  tls?: { key: Buffer; cert: Buffer };
  /** Require AUTH (PLAIN/LOGIN) with these credentials. */
  auth?: { user: string; pass: string };
  /** Reply to RCPT for this address: undefined accepts. */
  rcpt?: (address: string, attempt: number) => { code: number; message: string } | undefined;
  /** Advertise SIZE with this limit. */
  size?: number;
  /** Wait this long before answering the final dot (to observe concurrency). */
  dataDelayMs?: number;
  /** Reply after the final dot: undefined accepts. */
  data?: (attempt: number) => { code: number; message: string } | undefined;
  /** Announce DSN (RFC 3461); off by default, as many servers are. */
  dsn?: boolean;
  /** With tls: leave REQUIRETLS out of EHLO. */
  hideRequireTls?: boolean;
}

export interface Sink {
  readonly port: number;
  readonly messages: SinkMessage[];
  /** DATA transactions seen, accepted or not. */
  dataAttempts: number;
  rcptAttempts: Map<string, number>;
  /** Most DATA transactions in progress at once. */
  maxConcurrent: number;
  /** Connections accepted, and those open now. */
  connections: number;
  openConnections: number;
  /** Users that tried AUTH, and whether each transaction was under TLS. */
  readonly auths: string[];
  readonly secure: boolean[];
  /** Hangs up on every client now, as a server ending idle sessions does. */
  dropConnections(): void;
  close(): Promise<void>;
}

function smtpError(reply: { code: number; message: string }): Error {
  return Object.assign(new Error(reply.message), { responseCode: reply.code });
}

export async function startSink(behaviour: SinkBehaviour = {}): Promise<Sink> {
  let current = 0;
  const sink: Sink = {
    port: 0,
    messages: [],
    dataAttempts: 0,
    rcptAttempts: new Map(),
    maxConcurrent: 0,
    connections: 0,
    openConnections: 0,
    auths: [],
    secure: [],
    dropConnections: () => sockets.forEach((socket) => socket.destroy()),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server = new SMTPServer({
    authOptional: !behaviour.auth,
    disabledCommands: behaviour.auth ? [] : ['AUTH'],
    hideSTARTTLS: !behaviour.tls,
    ...(behaviour.tls ? { key: behaviour.tls.key, cert: behaviour.tls.cert } : {}),
    authMethods: ['PLAIN', 'LOGIN'],
    ...(behaviour.size ? { size: behaviour.size } : {}),
    hideDSN: !behaviour.dsn,
    hideREQUIRETLS: behaviour.hideRequireTls ?? false,
    logger: false,
    onConnect(_session, cb) {
      sink.connections++;
      sink.openConnections++;
      cb();
    },
    onClose() {
      sink.openConnections--;
    },
    onAuth(auth, _session, cb) {
      const want = behaviour.auth;
      sink.auths.push(auth.username ?? '');
      if (want && auth.username === want.user && auth.password === want.pass) return cb(null, { user: auth.username });
      cb(Object.assign(new Error('Authentication credentials invalid'), { responseCode: 535 }));
    },
    onMailFrom(_address, session, cb) {
      if (behaviour.tls && !session.secure) return cb(Object.assign(new Error('Must issue a STARTTLS command first'), { responseCode: 530 }));
      sink.secure.push(Boolean(session.secure));
      cb();
    },
    onRcptTo(address: SMTPServerAddress, _session, cb) {
      const n = (sink.rcptAttempts.get(address.address) ?? 0) + 1;
      sink.rcptAttempts.set(address.address, n);
      const r = behaviour.rcpt?.(address.address, n);
      cb(r ? smtpError(r) : undefined);
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      current++;
      sink.maxConcurrent = Math.max(sink.maxConcurrent, current);
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', async () => {
        if (behaviour.dataDelayMs) await new Promise((r) => setTimeout(r, behaviour.dataDelayMs));
        current--;
        sink.dataAttempts++;
        const r = behaviour.data?.(sink.dataAttempts);
        if (r) return cb(smtpError(r));
        sink.messages.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((a) => a.address),
          data: Buffer.concat(chunks).toString(),
          mailParams: { ...((session.envelope.mailFrom && session.envelope.mailFrom.args) || {}) },
          rcptParams: session.envelope.rcptTo.map((a) => ({ ...(a.args || {}) })),
        });
        cb(null);
      });
    },
  });
  const sockets = new Set<import('node:net').Socket>();
  server.server.on('connection', (socket: import('node:net').Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  (sink as { port: number }).port = (server.server.address() as { port: number }).port;
  return sink;
}
