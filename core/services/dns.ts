/**
 * The DNS service: node:dns/promises behind one small interface, so a test
 * points it at a loopback DNS server and every caller sees the same three
 * outcomes. A lookup is `found`, `none` (the name or the record type does not
 * exist: an answer) or `failed` (timeout, SERVFAIL, refused: no answer). A
 * failure is never reported as "none": a mail server that confuses the two
 * bounces mail on a flaky resolver, or lets a listed client through.
 */
import { Resolver } from 'node:dns/promises';
import type { DnsConfig } from '../config/schema.js';

export type Lookup<T> =
  | { readonly kind: 'found'; readonly records: readonly T[] }
  | { readonly kind: 'none'; readonly reason: 'nxdomain' | 'nodata' }
  | { readonly kind: 'failed'; readonly error: string };

export interface MxRecord {
  readonly exchange: string;
  readonly priority: number;
}

export interface Dns {
  mx(name: string): Promise<Lookup<MxRecord>>;
  a(name: string): Promise<Lookup<string>>;
  aaaa(name: string): Promise<Lookup<string>>;
  txt(name: string): Promise<Lookup<string>>;
  ptr(ip: string): Promise<Lookup<string>>;
}

const NONE: Record<string, 'nxdomain' | 'nodata'> = { ENOTFOUND: 'nxdomain', ENODATA: 'nodata' };

export class NodeDns implements Dns {
  private readonly resolver: Resolver;

  constructor(config: Pick<DnsConfig, 'servers' | 'timeout' | 'tries'>) {
    this.resolver = new Resolver({ timeout: config.timeout, tries: config.tries });
    if (config.servers.length) this.resolver.setServers([...config.servers]);
  }

  mx(name: string): Promise<Lookup<MxRecord>> {
    return this.lookup(() => this.resolver.resolveMx(name));
  }

  a(name: string): Promise<Lookup<string>> {
    return this.lookup(() => this.resolver.resolve4(name));
  }

  aaaa(name: string): Promise<Lookup<string>> {
    return this.lookup(() => this.resolver.resolve6(name));
  }

  txt(name: string): Promise<Lookup<string>> {
    return this.lookup(async () => (await this.resolver.resolveTxt(name)).map((parts) => parts.join('')));
  }

  ptr(ip: string): Promise<Lookup<string>> {
    return this.lookup(() => this.resolver.reverse(ip));
  }

  private async lookup<T>(query: () => Promise<T[]>): Promise<Lookup<T>> {
    try {
      const records = await query();
      return records.length ? { kind: 'found', records } : { kind: 'none', reason: 'nodata' };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      const none = NONE[code];
      if (none) return { kind: 'none', reason: none };
      return { kind: 'failed', error: `${code || 'error'}: ${(err as Error).message}` };
    }
  }
}
