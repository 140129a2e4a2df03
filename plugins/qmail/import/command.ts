/**
 * `yubin import qmail`: read a qmail + vpopmail box and write a yubin site
 * from it (see README, "Moving from qmail"). The report goes to stdout as
 * text, or as one JSON object with --json; problems with the arguments are
 * one line on stderr and exit 2.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { CommandError, loadConfig } from '../../../core/index.js';
import { applyPlan, type ApplyResult } from './apply.js';
import { planSite, type MaildirMode } from './plan.js';
import { readBox } from './read-box.js';
import { ImportReport } from './report.js';

interface ImportOpts {
  to: string;
  qmailDir: string;
  vpopmailDir?: string;
  tcprules?: string;
  spamdykeConf?: string;
  rcScript: string[];
  valiasDump?: string;
  maildirs: string;
  portOffset: string;
  dryRun?: boolean;
  json?: boolean;
}

const MODES: readonly MaildirMode[] = ['in-place', 'copy', 'move'];

export function registerImportCommands(program: Command): void {
  const importCmd = program.command('import').description('take over another mail server\'s setup');
  importCmd
    .command('qmail')
    .description('write a yubin site from a qmail + vpopmail + spamdyke box: control files, tcprules, start script, domains, users, aliases, mailboxes, queue')
    .requiredOption('--to <dir>', 'the site directory to write (yubin.yaml, rule files, var/)')
    .option('--qmail-dir <dir>', "qmail's directory", '/var/qmail')
    .option('--vpopmail-dir <dir>', "vpopmail's home (default: the vpopmail user's home, /usr/local/vpopmail or /home/vpopmail)")
    .option('--tcprules <file>', 'tcp.smtp, or tcp.smtp.cdb where the source is gone (default: the -x of the start script, then ~vpopmail/etc, /etc, /usr/local/etc)')
    .option('--spamdyke-conf <file>', 'spamdyke.conf (default: the -f in the start script, /etc or /usr/local/etc)')
    .option('--rc-script <file>', 'a start script with the tcpserver lines; may be given more than once (default: /usr/local/etc/rc.d/qmail.sh, /etc/init.d/qmail, supervise run files)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--valias-dump <file>', "a mysqldump of vpopmail's valias table (MySQL backend)")
    .option('--maildirs <mode>', 'in-place (use the old Maildirs where they are), copy or move (names, flags and mtimes kept)', 'in-place')
    .option('--port-offset <n>', 'add N to every port, to run beside the old server during the move', '0')
    .option('--dry-run', 'read and report; write nothing')
    .option('--json', 'the report as one JSON object')
    .action(async (opts: ImportOpts) => {
      const mode = opts.maildirs as MaildirMode;
      if (!MODES.includes(mode)) throw new CommandError(`--maildirs ${opts.maildirs}: expected in-place, copy or move`);
      if (!/^\d{1,5}$/.test(opts.portOffset) || Number(opts.portOffset) > 60000) throw new CommandError(`--port-offset ${opts.portOffset}: expected a number from 0 to 60000`);
      if (!existsSync(opts.qmailDir)) throw new CommandError(`--qmail-dir ${opts.qmailDir}: no such directory`);
      const siteDir = path.resolve(opts.to);
      const report = new ImportReport();
      const box = readBox(
        {
          qmailDir: path.resolve(opts.qmailDir),
          vpopmailDir: opts.vpopmailDir && path.resolve(opts.vpopmailDir),
          tcprules: opts.tcprules,
          spamdykeConf: opts.spamdykeConf,
          rcScripts: opts.rcScript,
          valiasDump: opts.valiasDump,
        },
        report,
      );
      const plan = planSite(box, { mode, portOffset: Number(opts.portOffset) }, siteDir, report);
      let result: ApplyResult | undefined;
      if (!opts.dryRun) {
        result = await applyPlan(plan, siteDir, mode, report);
        // The site must load as written; a failure here is a bug in the import, said plainly.
        await loadConfig(path.join(siteDir, 'yubin.yaml')).catch((err: Error) => {
          throw new CommandError(`the written yubin.yaml does not load: ${err.message}`, 1);
        });
      }
      const counts = report.counts();
      if (opts.json) {
        process.stdout.write(
          `${JSON.stringify(
            {
              site: siteDir,
              dryRun: Boolean(opts.dryRun),
              counts,
              items: report.items,
              desUsers: plan.desUsers,
              domains: plan.domains.length,
              users: plan.users.length,
              aliases: plan.aliases.length,
              queued: plan.queue.length,
              written: result?.written ?? [],
              injected: result?.injected ?? 0,
              copiedMessages: result?.copiedMessages ?? 0,
            },
            null,
            2,
          )}\n`,
        );
        return;
      }
      const lines = [report.text()];
      lines.push(`${plan.domains.length} domains, ${plan.users.length} users, ${plan.aliases.length} aliases, ${plan.queue.length} queued messages`);
      if (plan.desUsers.length) lines.push(`DES crypt passwords (cannot be checked; reset each with \`yubin user passwd ADDRESS\`): ${plan.desUsers.join(', ')}`);
      if (opts.dryRun) lines.push('dry run: nothing written');
      else {
        lines.push(`written: ${result!.written.join(', ') || 'nothing new'}; ${result!.injected} messages into the queue${mode === 'in-place' ? '' : `, ${result!.copiedMessages} messages ${mode === 'move' ? 'moved' : 'copied'}`}`);
        lines.push(`next: yubin check-config -c ${path.join(opts.to, 'yubin.yaml')}, then yubin serve -c ${path.join(opts.to, 'yubin.yaml')}`);
      }
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
