/**
 * whitelist: clients the later anti-spam plugins must leave alone, as the
 * seed guide's /var/qmail/whitelist/IP files did. Addresses come from a file
 * (one IP, CIDR block or `10.1.` prefix per line) and/or a directory where a
 * file named after the IP marks it; the directory is looked at on every
 * connection, so `touch dir/192.0.2.7` takes effect at once.
 */
import { access } from 'node:fs/promises';
import path from 'node:path';
import { isIP } from 'node:net';
import { z } from 'zod';
import { answer, controlLines, definePlugin, ipMatcher, normalizeIp, WatchedFile } from '../../core/index.js';

const options = z
  .strictObject({
    /** A file of IPs, CIDR blocks and prefixes; read again when it changes. */
    file: z.string().min(1).optional(),
    /** A directory holding one (empty) file per whitelisted IP. */
    dir: z.string().min(1).optional(),
  })
  .refine((o) => o.file !== undefined || o.dir !== undefined, { message: 'give file, dir or both' });

export default definePlugin({
  name: 'whitelist',
  options,
  async setup({ options, log, resolvePath }) {
    const file = options.file ? await WatchedFile.open(resolvePath(options.file), (t) => ipMatcher(controlLines(t)), { log }) : undefined;
    const dir = options.dir ? resolvePath(options.dir) : undefined;
    const inDir = async (ip: string) => {
      if (!dir || !isIP(ip)) return false; // an IP never contains a path separator; anything else is not looked up
      try {
        await access(path.join(dir, ip));
        return true;
      } catch {
        return false;
      }
    };
    return {
      hooks: {
        async connect({ connection }) {
          const ip = normalizeIp(connection.remoteIp);
          if ((file && (await file.get()).matches(ip)) || (await inDir(ip))) {
            connection.state.trusted = true;
            log.info({ conn: connection.id, ip }, 'whitelisted client');
          }
          return answer.continue();
        },
      },
    };
  },
});
