/**
 * `yubin init` and `yubin plugin new`, added to the program in one call so
 * core/cli.ts only names this module.
 */
import type { Command } from 'commander';
import { newPlugin } from './plugin.js';
import { initSite } from './site.js';

/** The top-level commands this module adds, for cli.ts's list of the core's own. */
export const SCAFFOLD_COMMANDS = ['init', 'plugin'] as const;

export function registerScaffoldCommands(program: Command): void {
  program
    .command('init <dir>')
    .description('make a hosting directory: yubin.yaml, rule files, plugins/, package.json, var/ (like haraka -i)')
    .option('--loopback', '127.0.0.1 and unprivileged ports (2525, 2587, 2465, 2110, 2995): runs as a normal user')
    .option('--force', 'overwrite an existing yubin.yaml and package.json')
    .action(async (dir: string, opts: { loopback?: boolean; force?: boolean }) => {
      const result = await initSite(dir, opts);
      process.stdout.write(`${result.report}\n`);
    });
  const plugin = program.command('plugin').description('plugin development');
  plugin
    .command('new <name> [dir]')
    .description('make a TypeScript plugin package with tests (name: yubin-plugin-NAME or @scope/yubin-plugin-NAME; dir: ./NAME)')
    .action(async (name: string, dir: string | undefined) => {
      const result = await newPlugin(name, dir);
      for (const w of result.warnings) process.stderr.write(`yubin: warning: ${w}\n`);
      process.stdout.write(`${result.report}\n`);
    });
}
