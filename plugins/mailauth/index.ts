/**
 * mailauth: SPF, DKIM, DMARC and ARC for inbound mail (an
 * Authentication-Results header, optional enforcement), and DKIM signatures
 * on mail from authenticated users. Built on the mailauth package (4.13:
 * later versions need a newer Node); every DNS question goes through the
 * core DNS service, so it is cached and a test can answer it.
 */
import { registerDkimCommands } from './cli.js';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { authenticate, dkimSign, spf, type AuthenticateResult } from 'mailauth';
import type { Logger } from 'pino';
import { z } from 'zod';
import { answer, definePlugin, splitAddress, type Connection, type Dns, type Message } from '../../core/index.js';
import { dnsResolver } from './resolver.js';
import { keyPath } from './keys.js';

const domainName = z.string().regex(/^[a-z0-9.-]+$/i, 'a domain name');

const options = z.strictObject({
  /** Check inbound mail and add Authentication-Results. */
  verify: z.boolean().default(true),
  /** The authserv-id in Authentication-Results; default the server's hostname. */
  authservId: z.string().min(1).optional(),
  /** Refuse at MAIL when the sender's SPF says fail (550 5.7.23). */
  enforceSpf: z.boolean().default(false),
  /** Refuse after DATA when DMARC fails and the domain's policy is reject (550 5.7.1). */
  enforceDmarc: z.boolean().default(false),
  /** DKIM keys, relative to dataDir: DIR/DOMAIN.SELECTOR.key (`yubin dkim keygen` writes them). */
  keyDir: z.string().min(1).default('dkim'),
  /** Sign mail from authenticated users whose From domain is listed here, with this selector. */
  sign: z.record(domainName, z.strictObject({ selector: z.string().regex(/^[a-z0-9-]+$/i).default('default') })).default({}),
});

interface MailauthState {
  spf?: string;
}

declare module '../../core/hooks.js' {
  interface TransactionState {
    mailauth?: MailauthState;
  }
}

/** Authenticated or allowed to relay: our own user's mail, signed rather than checked. */
function ours(connection: Connection): boolean {
  return connection.authUser !== undefined || connection.state.relayClient !== undefined;
}

/** `Name: value` header lines of a block (folded lines kept with their header), in order. */
function headerFields(block: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const field of block.replace(/\r?\n/g, '\r\n').split(/\r\n(?![ \t])/)) {
    const colon = field.indexOf(':');
    if (colon > 0) out.push([field.slice(0, colon).trim(), field.slice(colon + 1).replace(/^ /, '').replace(/\r\n$/, '')]);
  }
  return out;
}

/** The domain of the first From address (DMARC aligns DKIM on it). */
function fromDomain(message: Message): string | undefined {
  const from = message.header('from')[0];
  const m = from && /@([a-z0-9.-]+)/i.exec(from.replace(/\([^)]*\)/g, ''));
  return m?.[1]?.toLowerCase();
}

export default definePlugin({
  name: 'mailauth',
  // Reads what tcprules (RELAYCLIENT, RBLSMTPD) and whitelist (trusted) set at connect.
  after: ['tcprules', 'whitelist'],
  options,
  // yubin dkim keygen
  commands: ({ program, configOption }) => registerDkimCommands(program, configOption),
  setup({ options, services, hostname, dataDir, log }) {
    const dns = services.dns as Dns;
    const mta = options.authservId ?? hostname;
    const keyDir = path.resolve(dataDir, options.keyDir);
    const keys = new Map<string, Promise<Buffer>>();
    const key = (domain: string, selector: string) => {
      const file = keyPath(keyDir, domain, selector);
      let k = keys.get(file);
      if (!k) {
        k = readFile(file);
        // A missing key is retried next time (it may be generated meanwhile).
        k.catch(() => keys.delete(file));
        keys.set(file, k);
      }
      return k;
    };

    return {
      hooks: {
        async mail({ connection, transaction, sender, signal }) {
          if (!options.enforceSpf || !sender || ours(connection) || connection.state.trusted) return answer.continue();
          const result = await spf({ sender: sender.address, ip: connection.remoteIp, helo: connection.heloName ?? '', mta, resolver: dnsResolver(dns, signal) });
          (transaction.state.mailauth ??= {}).spf = result.status.result;
          if (result.status.result !== 'fail') return answer.continue();
          log.info({ conn: connection.id, rule: 'spf', sender: sender.address, ip: connection.remoteIp, rr: result.rr }, 'SPF fail: refusing the sender');
          return answer.reject(550, '5.7.23', `SPF check failed: ${sender.domain} does not designate ${connection.remoteIp} as permitted sender`);
        },

        async data({ connection, transaction, message, signal }) {
          if (ours(connection)) return signMessage(message, transaction.sender?.address, connection, log);
          if (!options.verify || connection.state.trusted) return answer.continue();
          const started = Date.now();
          let result: AuthenticateResult;
          try {
            result = await authenticate(message.stream(), {
              ip: connection.remoteIp,
              helo: connection.heloName ?? '',
              sender: transaction.sender?.address ?? '',
              mta,
              resolver: dnsResolver(dns, signal),
              disableBimi: true,
            });
          } catch (err) {
            // A check that cannot run is not a verdict: the message goes on unmarked, and the log says why.
            log.warn({ conn: connection.id, err: (err as Error).message }, 'mailauth: checks failed to run');
            return answer.continue();
          }
          for (const [name, value] of headerFields(result.headers)) message.addHeader(name, value);
          const dmarc = result.dmarc || undefined;
          const summary = {
            conn: connection.id,
            dkim: result.dkim.results.map((r) => `${r.status.result}${r.signingDomain ? ` (${r.signingDomain})` : ''}`),
            spf: result.spf ? result.spf.status.result : undefined,
            dmarc: dmarc?.status.result,
            policy: dmarc?.policy,
            elapsedMs: Date.now() - started,
          };
          log.info(summary, 'mailauth: checked');
          if (options.enforceDmarc && dmarc?.status.result === 'fail' && dmarc.policy === 'reject') {
            return answer.reject(550, '5.7.1', `Message rejected by the DMARC policy of ${dmarc.domain}`);
          }
          return answer.continue();
        },
      },
    };

    async function signMessage(message: Message, envelopeSender: string | undefined, connection: Connection, log: Logger) {
      const domain = fromDomain(message) ?? (envelopeSender ? splitAddress(envelopeSender).domain : undefined);
      const setting = domain ? options.sign[domain] : undefined;
      if (!domain || !setting) return answer.continue();
      try {
        const privateKey = await key(domain, setting.selector);
        // mailauth 4 reads the keys from signatureData (its typings show them at the top level, where they are ignored).
        const signed = await dkimSign(message.stream(), {
          canonicalization: 'relaxed/relaxed',
          signatureData: [{ signingDomain: domain, selector: setting.selector, privateKey }],
        } as Parameters<typeof dkimSign>[1]);
        if (signed.errors.length) throw signed.errors[0];
        if (!signed.signatures.trim()) throw new Error('no signature produced');
        for (const [name, value] of headerFields(signed.signatures)) message.addHeader(name, value);
        log.info({ conn: connection.id, domain, selector: setting.selector }, 'mailauth: DKIM signed');
      } catch (err) {
        // Unsigned mail is still mail: send it and say why in the log.
        log.warn({ conn: connection.id, domain, err: (err as Error).message }, 'mailauth: DKIM signing failed; sending unsigned');
      }
      return answer.continue();
    }
  },
});
