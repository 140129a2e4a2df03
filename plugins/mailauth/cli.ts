/** `yubin dkim keygen DOMAIN [--selector S]`: writes the key where the mailauth plugin reads it and prints the TXT record to publish. */
import path from 'node:path';
import type { Command, Option } from 'commander';
import { CommandError, commandOptions, loadConfig } from '../../core/index.js';
import { generateKey, dkimRecord } from './keys.js';

export class DkimCommandError extends CommandError {}

export function registerDkimCommands(program: Command, configOption: () => Option): void {
  const dkim = program.command('dkim').description('DKIM keys for the mailauth plugin');
  dkim
    .command('keygen <domain>')
    .description('make a 2048-bit RSA key for DOMAIN and print the DNS TXT record to publish')
    .addOption(configOption())
    .option('--selector <selector>', 'the s= selector', 'default')
    .action(async (domain: string, opts: { config: string; selector: string }) => {
      const d = domain.toLowerCase().replace(/\.$/, '');
      if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/.test(d)) throw new DkimCommandError(`invalid domain name: ${domain}`);
      if (!/^[a-z0-9-]+$/i.test(opts.selector)) throw new DkimCommandError(`invalid selector: ${opts.selector}`);
      const { config } = await loadConfig(opts.config);
      const keyDir = (commandOptions(config, 'mailauth') as { keyDir?: string }).keyDir ?? 'dkim';
      let key: { file: string; pem: string };
      try {
        key = await generateKey(path.resolve(config.dataDir, keyDir), d, opts.selector);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new DkimCommandError(`a key for ${d} with selector ${opts.selector} exists; remove it first or use another --selector`);
        throw err;
      }
      const record = dkimRecord(d, opts.selector, key.pem);
      process.stdout.write(
        `wrote ${key.file}\npublish this record, then add to plugins.mailauth.sign:  ${d}: { selector: ${opts.selector} }\n${record.zoneLine}\n`,
      );
    });
}
