/**
 * `yubin vacation set|off|show|list`: qmailadmin's vacation page on the
 * command line. The commands write the plugin's SQLite file; the running
 * server reads it at its next delivery, so a change counts at once.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Command, Option } from 'commander';
import { CommandError, commandOptions, loadConfig, type Config } from '../../core/index.js';
import { formatWhen, parseWhen, type Edge } from './dates.js';
import { autorespondOptions, databasePath } from './options.js';
import { normalizeAddress, VacationError, vacationState, Vacations, type ReplyRecord, type Vacation } from './settings.js';

const usage = (message: string): never => {
  throw new CommandError(message);
};

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

interface Ctx {
  readonly config: Config;
  readonly file: string;
}

async function context(configFile: string): Promise<Ctx> {
  const { config } = await loadConfig(configFile);
  const parsed = autorespondOptions.safeParse(commandOptions(config, 'autorespond'));
  if (!parsed.success) usage(`plugins.autorespond: ${parsed.error.issues[0]?.message ?? 'invalid options'}`);
  return { config, file: databasePath(parsed.data!, config.dataDir) };
}

/** Runs with the store open; `read`: no file yet means nothing is set, and none is made. */
async function withVacations<T>(ctx: Ctx, read: boolean, fn: (store: Vacations | undefined) => T | Promise<T>): Promise<T> {
  const store = read && !existsSync(ctx.file) ? undefined : new Vacations(ctx.file);
  try {
    return await fn(store);
  } catch (err) {
    if (err instanceof VacationError) usage(err.message);
    throw err;
  } finally {
    store?.close();
  }
}

function addressArg(text: string): string {
  return normalizeAddress(text) ?? usage(`invalid address: ${text} (expected user@domain)`);
}

function timeArg(text: string | undefined, edge: Edge, now: number): number | undefined {
  if (text === undefined) return undefined;
  return parseWhen(text, edge, now) ?? usage(`invalid --${edge}: ${text} (expected YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], either with Z or an offset such as +09:00, or now)`);
}

async function bodyArg(opts: { body?: string; bodyFile?: string }): Promise<string> {
  if (opts.body !== undefined && opts.bodyFile !== undefined) usage('give only one of --body and --body-file');
  if (opts.body !== undefined) return opts.body;
  if (opts.bodyFile === undefined) return usage("the reply's text is missing: --body TEXT or --body-file FILE");
  if (opts.bodyFile === '-') {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
  return readFile(opts.bodyFile, 'utf8').catch((err: Error) => usage(`cannot read --body-file ${opts.bodyFile}: ${err.message}`));
}

/** `from ... until ...` in words. */
function span(v: Vacation): string {
  const from = v.start === undefined ? 'from now' : `from ${formatWhen(v.start)}`;
  const until = v.end === undefined ? 'until `yubin vacation off`' : `until ${formatWhen(v.end)}`;
  return `${from} ${until}`;
}

function view(v: Vacation, replies: readonly ReplyRecord[], now: number) {
  const iso = (t: number | undefined) => (t === undefined ? null : new Date(t).toISOString());
  return {
    address: v.address,
    enabled: v.enabled,
    state: vacationState(v, now),
    start: iso(v.start),
    end: iso(v.end),
    subject: v.subject ?? null,
    body: v.body,
    updated: iso(v.updated),
    repliedTo: replies.map((r) => ({ sender: r.sender, at: iso(r.at), queueId: r.queueId ?? null })),
  };
}

const STATE_WORDS = { active: 'on, answering now', scheduled: 'on, not started yet', ended: 'on, but ended', off: 'off' } as const;

export function registerVacationCommands(program: Command, configOption: () => Option): void {
  const vacation = program.command('vacation').description("automatic vacation replies (autorespond; the plugin goes before vpopmail in delivery.plugins)");

  vacation
    .command('set <address>')
    .description('turn on a vacation reply for ADDRESS; a new set answers each sender once again')
    .addOption(configOption())
    .option('--start <time>', 'replies from then on: YYYY-MM-DD, YYYY-MM-DDTHH:MM, with Z or +HH:MM, or now (default: now)')
    .option('--end <time>', 'no replies from then on; a date alone means through that day (default: until vacation off)')
    .option('--subject <text>', 'subject of the reply (default: "Auto: " and the original subject)')
    .option('--body <text>', 'text of the reply')
    .option('--body-file <file>', 'read the text of the reply from FILE (- for standard input)')
    .action(async (address: string, opts: { config: string; start?: string; end?: string; subject?: string; body?: string; bodyFile?: string }) => {
      const a = addressArg(address);
      const now = Date.now();
      const start = timeArg(opts.start, 'start', now);
      const end = timeArg(opts.end, 'end', now);
      if (start !== undefined && end !== undefined && end <= start) usage(`--end ${opts.end} is not after --start ${opts.start}`);
      if (end !== undefined && end <= now) usage(`--end ${opts.end} is already past: no mail would be answered`);
      const body = await bodyArg(opts);
      const ctx = await context(opts.config);
      await withVacations(ctx, false, (store) => {
        const v = store!.set(a, { enabled: true, start, end, subject: opts.subject, body });
        out(`vacation on for ${v.address}, ${span(v)}`);
      });
      if (!ctx.config.delivery.plugins.some((p) => p.ref === 'autorespond')) {
        process.stderr.write(`yubin: warning: autorespond is not in delivery.plugins: no replies are sent until it is listed there, before vpopmail\n`);
      }
    });

  vacation
    .command('off <address>')
    .description('stop the vacation reply of ADDRESS (its text is kept for show)')
    .addOption(configOption())
    .action(async (address: string, opts: { config: string }) => {
      const a = addressArg(address);
      await withVacations(await context(opts.config), false, (store) => {
        const v = store!.get(a);
        if (!v) return out(`no vacation set for ${a}`);
        if (!v.enabled) return out(`vacation for ${a} is already off`);
        store!.set(a, { ...v, enabled: false });
        out(`vacation off for ${a}`);
      });
    });

  vacation
    .command('show <address>')
    .description('the vacation settings of ADDRESS and whom this period has answered')
    .addOption(configOption())
    .option('--json', 'as JSON (null when none is set)')
    .action(async (address: string, opts: { config: string; json?: boolean }) => {
      const a = addressArg(address);
      await withVacations(await context(opts.config), true, (store) => {
        const v = store?.get(a);
        if (!v) return out(opts.json ? 'null' : `no vacation set for ${a}`);
        const replies = store!.replies(a);
        const now = Date.now();
        if (opts.json) return out(JSON.stringify(view(v, replies, now), null, 2));
        out(
          [
            `${v.address}: ${STATE_WORDS[vacationState(v, now)]}`,
            `  start:   ${v.start === undefined ? '(open: from when it was set)' : formatWhen(v.start)}`,
            `  end:     ${v.end === undefined ? '(open: until vacation off)' : formatWhen(v.end)}`,
            `  subject: ${v.subject ?? '(Auto: and the original subject)'}`,
            `  replied: ${replies.length} sender${replies.length === 1 ? '' : 's'} since ${formatWhen(v.updated)}`,
            '  text:',
            ...v.body.replace(/\n$/, '').split('\n').map((l) => `    ${l}`),
          ].join('\n'),
        );
      });
    });

  vacation
    .command('list')
    .description('every address with a vacation reply set, on or off')
    .addOption(configOption())
    .option('--json', 'as JSON')
    .action(async (opts: { config: string; json?: boolean }) => {
      await withVacations(await context(opts.config), true, (store) => {
        const list = store?.list() ?? [];
        const now = Date.now();
        if (opts.json) return out(JSON.stringify(list.map((v) => view(v, store!.replies(v.address), now)), null, 2));
        if (!list.length) return out('no vacations set');
        out(list.map((v) => `${v.address}  ${vacationState(v, now)}  ${span(v)}`).join('\n'));
      });
    });
}
