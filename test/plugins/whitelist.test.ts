/** whitelist: client IPs from a file or a directory of IP-named files mark the connection trusted. */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { answer, definePlugin } from '../../core/index.js';
import { startTestServer } from '../../core/testing/index.js';
import { tempDir } from '../helpers.js';

/** What a later anti-spam plugin sees. */
const probe = definePlugin({
  name: 'probe',
  setup: () => ({ hooks: { mail: ({ connection }) => answer.accept(`trusted=${connection.state.trusted === true}`, 250, '2.1.0') } }),
});

t.test('file entries (IP, CIDR, prefix) and IP-named files in a directory', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'whitelist.txt');
  const wdir = path.join(dir, 'whitelist');
  await mkdir(wdir);
  await writeFile(file, '127.0.0.50\n127.0.1.0/24 # a block\n127.0.2.\n');
  const s = await startTestServer({ plugins: ['whitelist', probe], pluginOptions: { whitelist: { file, dir: wdir } } });
  t.teardown(() => s.close());
  const trusted = async (ip: string) => {
    const c = await s.connect({ localAddress: ip });
    await c.ehlo();
    const r = await c.command('MAIL FROM:<a@example.net>');
    await c.quit();
    return r.text;
  };
  t.equal(await trusted('127.0.0.50'), 'trusted=true', 'exact IP');
  t.equal(await trusted('127.0.1.9'), 'trusted=true', 'CIDR');
  t.equal(await trusted('127.0.2.200'), 'trusted=true', 'prefix');
  t.equal(await trusted('127.0.0.51'), 'trusted=false');
  await writeFile(path.join(wdir, '127.0.0.51'), '');
  t.equal(await trusted('127.0.0.51'), 'trusted=true', 'touch whitelist/IP takes effect at once');
});

t.test('options need a file or a directory', async (t) => {
  await t.rejects(startTestServer({ plugins: ['whitelist'] }), /plugins\[0\]: options of whitelist: give file, dir or both/);
});
