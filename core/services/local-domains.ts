/**
 * The domains this server delivers locally (qmail's locals + virtualdomains).
 * The config lists some; mailbox plugins add theirs at run time, so a new
 * virtual domain is local at once, without a restart.
 */
export class LocalDomains {
  private readonly domains = new Set<string>();

  constructor(initial: Iterable<string> = []) {
    for (const d of initial) this.add(d);
  }

  add(domain: string): void {
    this.domains.add(normalizeDomain(domain));
  }

  delete(domain: string): void {
    this.domains.delete(normalizeDomain(domain));
  }

  has(domain: string): boolean {
    return this.domains.has(normalizeDomain(domain));
  }

  /** In the order they were added (the config's order first). */
  list(): string[] {
    return [...this.domains];
  }
}

export function normalizeDomain(domain: string): string {
  return domain.trim().toLowerCase().replace(/\.$/, '');
}
