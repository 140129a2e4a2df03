/**
 * `yubin init DIR`: a hosting directory, as Haraka's `haraka -i DIR` makes
 * one. yubin.yaml with the files its plugins read, plugins/ for local
 * plugins, a package.json for npm ones, and var/ for the data.
 */
import { existsSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { CommandError } from '../plugin.js';
import { runningPackage } from './package-root.js';
import { siteConfig, type Ipv6Listeners } from './site-config.js';
import { BADMAILFROM, GITIGNORE, packageNameFor, PLUGINS_README, RCPTHOSTS, sitePackageJson, TCP_SMTP, WHITELIST } from './site-files.js';
import { writeScaffold, type ScaffoldFile } from './write.js';

export interface InitOptions {
  /** 127.0.0.1 and unprivileged ports, no IPv6: runs as a normal user as is. */
  readonly loopback?: boolean;
  /** Overwrite an existing yubin.yaml and package.json (and the other files). */
  readonly force?: boolean;
  /** How to write the IPv6 listeners; default: what this machine's kernel allows. */
  readonly ipv6?: Ipv6Listeners;
}

export interface InitResult {
  readonly dir: string;
  readonly files: readonly string[];
  readonly dataDir: string;
  /** What to tell the admin: the files and the next commands. */
  readonly report: string;
}

/** Files that hold the admin's own work: never replaced without --force. */
const PROTECTED = ['yubin.yaml', 'package.json'];

export async function initSite(dirArg: string, options: InitOptions = {}): Promise<InitResult> {
  const dir = path.resolve(dirArg);
  if (!options.force) {
    for (const name of PROTECTED) {
      const file = path.join(dir, name);
      if (existsSync(file)) throw new CommandError(`${file} exists; use --force to overwrite it`);
    }
  }
  if (existsSync(dir) && !(await isDirectory(dir))) throw new CommandError(`${dir} exists and is not a directory`);
  const yubin = runningPackage();
  const loopback = options.loopback ?? false;
  const files: ScaffoldFile[] = [
    { path: 'yubin.yaml', text: siteConfig({ loopback, ipv6: loopback ? 'none' : (options.ipv6 ?? 'separate') }) },
    { path: 'tcp.smtp', text: TCP_SMTP },
    { path: 'whitelist.txt', text: WHITELIST },
    { path: 'badmailfrom', text: BADMAILFROM },
    { path: 'rcpthosts', text: RCPTHOSTS },
    { path: 'plugins/README.md', text: PLUGINS_README },
    { path: 'package.json', text: sitePackageJson(packageNameFor(path.basename(dir)), yubin.root) },
    { path: '.gitignore', text: GITIGNORE },
  ];
  const written = await writeScaffold(dir, files);
  const dataDir = path.join(dir, 'var');
  // whitelist/ holds one empty file per whitelisted IP; var/ is yubin.yaml's dataDir.
  await mkdir(path.join(dir, 'whitelist'), { recursive: true });
  await mkdir(dataDir, { recursive: true });
  return { dir, files: written, dataDir, report: report(dir, written, dataDir, loopback) };
}

async function isDirectory(p: string): Promise<boolean> {
  return (await stat(p)).isDirectory();
}

/** Paths as the admin typed them when that is shorter: `mysite/yubin.yaml`, not /home/... */
function shown(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : p;
}

function report(dir: string, written: readonly string[], dataDir: string, loopback: boolean): string {
  const config = shown(path.join(dir, 'yubin.yaml'));
  const lines = [
    `wrote ${shown(dir)}/ (${loopback ? '127.0.0.1, ports 2525 2587 2465 2110 2995' : 'ports 25 587 465 110 995'}):`,
    ...written.map((f) => `  ${shown(f)}`),
    `  ${shown(path.join(dir, 'whitelist'))}/`,
    `  ${shown(dataDir)}/ (dataDir)`,
    '',
    'next:',
    `  yubin check-config -c ${config}`,
    `  yubin domain add example.com -c ${config}     # a virtual domain and its postmaster`,
    `  yubin serve ${shown(dir)}                       # same as yubin serve -c ${config}`,
    `  cd ${shown(dir)} && npm install yubin-plugin-NAME   # then list it in yubin.yaml`,
  ];
  if (!loopback) lines.splice(lines.length - 2, 0, '  # ports below 1024: run as root or give node CAP_NET_BIND_SERVICE');
  return lines.join('\n');
}
