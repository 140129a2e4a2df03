/**
 * A scriptable SMTP sink on loopback (smtp-server): records every message
 * and answers RCPT and DATA as the test says, e.g. 451 first and 250 after.
 */
import { SMTPServer, type SMTPServerAddress } from 'smtp-server';

export interface SinkMessage {
  readonly from: string;
  readonly to: string[];
  readonly data: string;
}

export interface SinkBehaviour {
  /** Reply to RCPT for this address: undefined accepts. */
  rcpt?: (address: string, attempt: number) => { code: number; message: string } | undefined;
  /** Reply after the final dot: undefined accepts. */
  data?: (attempt: number) => { code: number; message: string } | undefined;
}

export interface Sink {
  readonly port: number;
  readonly messages: SinkMessage[];
  /** DATA transactions seen, accepted or not. */
  dataAttempts: number;
  rcptAttempts: Map<string, number>;
  close(): Promise<void>;
}

function smtpError(reply: { code: number; message: string }): Error {
  return Object.assign(new Error(reply.message), { responseCode: reply.code });
}

export async function startSink(behaviour: SinkBehaviour = {}): Promise<Sink> {
  const sink: Sink = {
    port: 0,
    messages: [],
    dataAttempts: 0,
    rcptAttempts: new Map(),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH'],
    hideSTARTTLS: true,
    logger: false,
    onRcptTo(address: SMTPServerAddress, _session, cb) {
      const n = (sink.rcptAttempts.get(address.address) ?? 0) + 1;
      sink.rcptAttempts.set(address.address, n);
      const r = behaviour.rcpt?.(address.address, n);
      cb(r ? smtpError(r) : undefined);
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        sink.dataAttempts++;
        const r = behaviour.data?.(sink.dataAttempts);
        if (r) return cb(smtpError(r));
        sink.messages.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((a) => a.address),
          data: Buffer.concat(chunks).toString(),
        });
        cb(null);
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  (sink as { port: number }).port = (server.server.address() as { port: number }).port;
  return sink;
}
