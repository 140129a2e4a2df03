/**
 * `yubin plugin new NAME [DIR]`: a plugin package that builds and passes its
 * own tests right after `npm install && npm test`, like haraka-plugin-template.
 */
import { existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { CommandError } from '../plugin.js';
import { runningPackage, type RunningPackage } from './package-root.js';
import { PLUGIN_GITIGNORE, PLUGIN_TSCONFIG, pluginIndex, pluginPackageJson, pluginReadme, pluginTest, type PluginTemplate } from './plugin-files.js';
import { writeScaffold } from './write.js';

/** npm's rules for a new package name: lower case, URL-safe, at most 214 characters, an optional @scope/. */
const PACKAGE_NAME = /^(?:@[a-z0-9-~][a-z0-9-._~]*\/)?[a-z0-9-~][a-z0-9-._~]*$/;

/** Why NAME cannot be an npm package's name, or undefined when it can. */
export function packageNameProblem(name: string): string | undefined {
  if (name.length > 214) return 'longer than 214 characters';
  if (name !== name.toLowerCase()) return 'npm package names are lower case';
  if (!PACKAGE_NAME.test(name)) return 'use lower-case letters, digits, - . _ ~ and an optional @scope/';
  if (['node_modules', 'favicon.ico'].includes(name)) return 'a name npm refuses';
  return undefined;
}

/** The name without its scope: the default directory. */
export function unscoped(name: string): string {
  return name.startsWith('@') ? name.slice(name.indexOf('/') + 1) : name;
}

/** Tool ranges as yubin-mail's own package.json has them, so the template builds as yubin does. */
function toolVersions(pkg: RunningPackage): PluginTemplate['versions'] {
  const all = { ...pkg.dependencies, ...pkg.devDependencies };
  return {
    typescript: all.typescript ?? '5.9',
    tap: all.tap ?? '^21.8.0',
    zod: all.zod ?? '^4.6.7',
    typesNode: all['@types/node'] ?? '^20.19.43',
  };
}

export interface NewPluginResult {
  readonly dir: string;
  readonly files: readonly string[];
  /** Advice that is not an error (a name without the yubin-plugin- prefix). */
  readonly warnings: readonly string[];
  readonly report: string;
}

export async function newPlugin(name: string, dirArg?: string): Promise<NewPluginResult> {
  const problem = packageNameProblem(name);
  if (problem) throw new CommandError(`${JSON.stringify(name)} is not a valid npm package name: ${problem}`);
  const warnings: string[] = [];
  if (!unscoped(name).startsWith('yubin-plugin-')) warnings.push(`${name} does not start with yubin-plugin-: other people will not find it among yubin's plugins`);
  const dir = path.resolve(dirArg ?? unscoped(name));
  if (existsSync(dir)) {
    if (!(await stat(dir)).isDirectory()) throw new CommandError(`${dir} exists and is not a directory`);
    if ((await readdir(dir)).length > 0) throw new CommandError(`${dir} is not empty`);
  }
  const yubin = runningPackage();
  const t: PluginTemplate = { name, yubinVersion: yubin.version, yubinRoot: yubin.root, versions: toolVersions(yubin) };
  const files = await writeScaffold(dir, [
    { path: 'package.json', text: pluginPackageJson(t) },
    { path: 'tsconfig.json', text: PLUGIN_TSCONFIG },
    { path: 'src/index.ts', text: pluginIndex(t) },
    { path: 'test/index.test.ts', text: pluginTest(t) },
    { path: 'README.md', text: pluginReadme(t, path.basename(dir)) },
    { path: '.gitignore', text: PLUGIN_GITIGNORE },
  ]);
  const rel = path.relative(process.cwd(), dir);
  const shown = rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : dir;
  const report = [
    `wrote ${name} in ${shown}/:`,
    ...files.map((f) => `  ${path.relative(dir, f)}`),
    '',
    'next:',
    `  cd ${shown} && npm install && npm test`,
    `  then in a site (yubin init DIR): cd DIR && npm install ${dir}, and list ${name} in yubin.yaml`,
  ].join('\n');
  return { dir, files, warnings, report };
}
