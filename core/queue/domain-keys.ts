/**
 * The keys a per-domain setting is looked up by, nearest first: the domain
 * itself, then `.parent` for each name above it (qmail's smtproutes order:
 * `.example.com` covers every name below example.com, not example.com).
 */
export function domainKeys(domain: string): string[] {
  const d = domain.toLowerCase();
  const keys = [d];
  for (let i = d.indexOf('.'); i >= 0; i = d.indexOf('.', i + 1)) keys.push(d.slice(i));
  return keys;
}
