/**
 * What `yubin import qmail` says about every item it read: mapped (and to
 * what), not mapped (and why), or needing the admin's attention. The same
 * list is printed as text or, with --json, as one object.
 */
import type { SourceProblem } from '../../../core/source-lines.js';

export type ItemStatus = 'mapped' | 'not-mapped' | 'attention';

export interface ReportItem {
  readonly status: ItemStatus;
  /** What was read: `control/rcpthosts`, `vpasswd example.jp`, `tcp.smtp:3`. */
  readonly source: string;
  /** What it became, or why not, in one sentence. */
  readonly detail: string;
}

export class ImportReport {
  readonly items: ReportItem[] = [];

  mapped(source: string, detail: string): void {
    this.items.push({ status: 'mapped', source, detail });
  }

  notMapped(source: string, detail: string): void {
    this.items.push({ status: 'not-mapped', source, detail });
  }

  attention(source: string, detail: string): void {
    this.items.push({ status: 'attention', source, detail });
  }

  /** Malformed input: reported with its place and skipped, never guessed at. */
  problems(problems: readonly SourceProblem[], consequence = 'skipped'): void {
    for (const p of problems) this.attention(p.where, `${p.reason} (${consequence})`);
  }

  counts(): Record<ItemStatus, number> {
    const out: Record<ItemStatus, number> = { mapped: 0, 'not-mapped': 0, attention: 0 };
    for (const i of this.items) out[i.status]++;
    return out;
  }

  text(): string {
    const c = this.counts();
    const section = (status: ItemStatus, title: string) => {
      const items = this.items.filter((i) => i.status === status);
      return items.length ? [`${title} (${items.length}):`, ...items.map((i) => `  ${i.source}: ${i.detail}`), ''] : [];
    };
    return [
      ...section('mapped', 'mapped'),
      ...section('not-mapped', 'not mapped'),
      ...section('attention', 'needs attention'),
      `${c.mapped} mapped, ${c['not-mapped']} not mapped, ${c.attention} need attention`,
    ].join('\n');
  }
}
