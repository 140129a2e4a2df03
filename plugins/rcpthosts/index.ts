/**
 * rcpthosts: qmail-smtpd's relay control. A recipient is taken only for a
 * domain of ours (the local domains, the `domains` option, the rcpthosts
 * file; `.example.com` covers every subdomain) or from a client that may
 * relay (tcprules RELAYCLIENT, SMTP AUTH). Everything else gets qmail's 553.
 *
 * Routing tricks in the local part (`user%other@us`, `other!user@us`, a
 * quoted '@') are refused too unless the client may relay: a host that
 * honoured them would relay, and nmap's smtp-open-relay probe tries them all.
 */
import { z } from 'zod';
import { answer, controlLines, definePlugin, domainMatches, hasSenderRouting, WatchedFile } from '../../core/index.js';

const options = z.strictObject({
  /** Domains to accept besides the local ones (backup MX, relay targets). */
  domains: z.array(z.string().min(1)).default([]),
  /** A qmail control/rcpthosts file; read again when it changes. */
  file: z.string().min(1).optional(),
  /** control/morercpthosts, consulted after rcpthosts as qmail does. */
  moreFile: z.string().min(1).optional(),
});

const REFUSAL = answer.reject(553, '5.7.1', "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)");

const parseDomains = (text: string) => new Set(controlLines(text).map((d) => d.toLowerCase()));

export default definePlugin({
  name: 'rcpthosts',
  options,
  async setup({ options, log, services, resolvePath }) {
    const fixed = new Set(options.domains.map((d) => d.toLowerCase()));
    const files = await Promise.all(
      [options.file, options.moreFile].filter((f): f is string => f !== undefined).map((f) => WatchedFile.open(resolvePath(f), parseDomains, { log })),
    );
    return {
      hooks: {
        async rcpt({ connection, recipient, permitRelay }) {
          if (connection.relayAllowed) return answer.continue();
          if (hasSenderRouting(recipient.local)) return REFUSAL;
          if (services.localDomains.has(recipient.domain)) return answer.continue();
          let listed = domainMatches(recipient.domain, fixed);
          for (const f of files) listed ||= domainMatches(recipient.domain, await f.get());
          if (!listed) return REFUSAL;
          permitRelay();
          return answer.continue();
        },
      },
    };
  },
});
