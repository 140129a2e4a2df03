/**
 * The domains this server delivers locally (qmail's locals + virtualdomains).
 * The config lists some; mailbox plugins add theirs at run time, so a new
 * virtual domain is local at once, without a restart.
 */
/** Domains a plugin knows (virtual domains in a mail store), asked on every lookup so a new one counts at once. */
export interface LocalDomainSource {
  /** Called with a normalized (lower-case, no trailing dot) domain; must be synchronous and cheap. */
  has(domain: string): boolean;
  list(): readonly string[];
  /** The list may lack domains now (its store cannot be read): a domain that looks foreign may be local. */
  incomplete?(): boolean;
}

export class LocalDomains {
  private readonly domains = new Set<string>();
  private readonly sources = new Set<LocalDomainSource>();

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
    const d = normalizeDomain(domain);
    if (this.domains.has(d)) return true;
    for (const s of this.sources) if (s.has(d)) return true;
    return false;
  }

  /** Some source cannot say for sure now: a domain not found may still be local. */
  incomplete(): boolean {
    for (const s of this.sources) if (s.incomplete?.()) return true;
    return false;
  }

  /** Adds a plugin's domains; the returned function takes them away again (plugin closed on reload). */
  addSource(source: LocalDomainSource): () => void {
    this.sources.add(source);
    return () => void this.sources.delete(source);
  }

  /** In the order they were added (the config's order first), then the plugins' domains. */
  list(): string[] {
    const out = new Set(this.domains);
    for (const s of this.sources) for (const d of s.list()) out.add(d);
    return [...out];
  }
}

export function normalizeDomain(domain: string): string {
  return domain.trim().toLowerCase().replace(/\.$/, '');
}
