/**
 * The layering of core/, checked on the TypeScript source: POP3, the queue
 * and the protocol-neutral session layer take nothing from core/smtp/
 * (what they share lives in core/session/ or core/ itself), the session
 * layer takes nothing from either protocol, and core/ never imports a plugin.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { ROOT } from './helpers.js';

/** Every `from '…'`, `import '…'`, `import('…')` and `export … from '…'` specifier in a source file. */
export function importSpecifiers(source: string): string[] {
  const out: string[] = [];
  const re = /\bfrom\s+['"]([^'"]+)['"]|\bimport\s+['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g;
  for (const m of source.matchAll(re)) out.push((m[1] ?? m[2] ?? m[3])!);
  return out;
}

function tsFiles(dir: string, recursive: boolean): string[] {
  const out: string[] = [];
  for (const e of readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (recursive) out.push(...tsFiles(rel, true));
    } else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(rel);
  }
  return out.sort();
}

/** The files under `dirs` that import a module resolving inside `forbidden` (a folder relative to ROOT), each with the specifier. */
function offenders(dirs: readonly string[], forbidden: string, recursive = false): string[] {
  const bad: string[] = [];
  for (const dir of dirs) {
    for (const file of tsFiles(dir, recursive)) {
      for (const spec of importSpecifiers(readFileSync(path.join(ROOT, file), 'utf8'))) {
        if (!spec.startsWith('.')) continue;
        const target = path.relative(ROOT, path.resolve(ROOT, path.dirname(file), spec));
        if (target === forbidden || target.startsWith(forbidden + path.sep)) bad.push(`${file} imports '${spec}'`);
      }
    }
  }
  return bad;
}

t.test('the import scanner sees every form of import', async (t) => {
  const src = [
    "import type { A } from '../smtp/a.js';",
    "import { B,\n  C } from \"../smtp/b.js\";",
    "export { D } from '../smtp/d.js';",
    "import '../smtp/side-effect.js';",
    "const e = await import('../smtp/e.js');",
  ].join('\n');
  t.same(importSpecifiers(src), ['../smtp/a.js', '../smtp/b.js', '../smtp/d.js', '../smtp/side-effect.js', '../smtp/e.js']);
});

t.test('core/pop3 and core/queue import nothing from core/smtp', async (t) => {
  t.ok(tsFiles('core/pop3', false).length > 0 && tsFiles('core/queue', false).length > 0, 'the source is there to read');
  t.same(offenders(['core/pop3', 'core/queue'], 'core/smtp'), []);
});

t.test('core/session imports from neither protocol', async (t) => {
  t.same(offenders(['core/session'], 'core/smtp'), []);
  t.same(offenders(['core/session'], 'core/pop3'), []);
});

t.test('core/net (the PROXY header) imports from neither protocol', async (t) => {
  t.ok(tsFiles('core/net', false).length > 0, 'the source is there to read');
  t.same(offenders(['core/net'], 'core/smtp'), []);
  t.same(offenders(['core/net'], 'core/pop3'), []);
});

t.test('core/ never imports from plugins/', async (t) => {
  t.same(offenders(['core'], 'plugins', true), []);
});
