/**
 * tcp.smtp rules as tcprules (ucspi-tcp 0.88) compiles them and tcpserver
 * looks them up: most specific rule first, not file order; file order only
 * decides between two lines with the same key. CIDR blocks and IPv6
 * addresses are accepted as in ucspi-tcp6.
 */
import { BlockList, isIP } from 'node:net';
import { normalizeIp } from '../../core/ip.js';

export interface Rule {
  /** The address part as written. */
  readonly address: string;
  readonly action: 'allow' | 'deny';
  readonly vars: Readonly<Record<string, string>>;
  readonly line: number;
}

interface CidrRule {
  readonly bits: number;
  readonly list: BlockList;
  readonly family: 'ipv4' | 'ipv6';
  readonly rule: Rule;
}

export interface RuleSet {
  /** Keys as tcprules writes them into the cdb: `1.2.3.4`, `1.2.`, `=host`, `=.suffix`, `=`, ``. */
  readonly keys: ReadonlyMap<string, Rule>;
  /** CIDR blocks, longest prefix first. */
  readonly cidrs: readonly CidrRule[];
  readonly size: number;
}

/** Parses the text of a rules file; throws `line N: reason` for the first malformed line. */
export function parseRules(text: string): RuleSet {
  const keys = new Map<string, Rule>();
  const cidrs: CidrRule[] = [];
  let size = 0;
  text.split('\n').forEach((raw, index) => {
    const lineNo = index + 1;
    const line = raw.replace(/[ \t\r]+$/, '');
    if (line === '' || line.startsWith('#')) return;
    if (!line.includes(':')) return; // tcprules ignores lines without a colon
    // The first colon followed by an instruction: IPv6 addresses contain colons, instructions do not start with hex.
    const m = /^(.*?):(allow|deny)(.*)$/.exec(line);
    if (!m) throw new Error(`line ${lineNo}: expected ADDRESS:allow or ADDRESS:deny, got ${JSON.stringify(line)}`);
    const address = m[1]!.trim();
    const rule: Rule = { address, action: m[2] as 'allow' | 'deny', vars: parseVars(m[3]!, lineNo), line: lineNo };
    size++;
    const cidr = /^\[?([0-9a-f:.]+)\]?\/(\d{1,3})$/i.exec(address);
    if (cidr) {
      const family = isIP(cidr[1]!);
      const bits = Number(cidr[2]);
      if (!family || bits > (family === 4 ? 32 : 128)) throw new Error(`line ${lineNo}: bad CIDR block ${address}`);
      const list = new BlockList();
      const fam = family === 4 ? 'ipv4' : 'ipv6';
      list.addSubnet(cidr[1]!, bits, fam);
      cidrs.push({ bits, list, family: fam, rule });
      return;
    }
    for (const key of expandAddress(address, lineNo)) if (!keys.has(key)) keys.set(key, rule);
  });
  cidrs.sort((a, b) => b.bits - a.bits);
  return { keys, cidrs, size };
}

/** `,VAR="value",X=/v/`: the character after '=' is the quote, whatever it is. */
function parseVars(rest: string, lineNo: number): Record<string, string> {
  const vars: Record<string, string> = {};
  let i = 0;
  while (i < rest.length) {
    if (rest[i] !== ',') throw new Error(`line ${lineNo}: expected ",VAR=value" after the instruction, got ${JSON.stringify(rest.slice(i))}`);
    const eq = rest.indexOf('=', i + 1);
    if (eq < 0) throw new Error(`line ${lineNo}: missing "=" in ${JSON.stringify(rest.slice(i))}`);
    const name = rest.slice(i + 1, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`line ${lineNo}: bad variable name ${JSON.stringify(name)}`);
    const quote = rest[eq + 1];
    if (quote === undefined) throw new Error(`line ${lineNo}: missing value for ${name}`);
    const end = rest.indexOf(quote, eq + 2);
    if (end < 0) throw new Error(`line ${lineNo}: unterminated value for ${name} (quote ${quote})`);
    vars[name] = rest.slice(eq + 2, end);
    i = end + 1;
  }
  return vars;
}

/** The keys one address line stands for; ranges like `10.1.2.3-40` or `10.1-5.` become one key per value. */
function expandAddress(address: string, lineNo: number): string[] {
  if (address === '' || address.startsWith('=')) return [address.toLowerCase()];
  if (address.includes('@')) throw new Error(`line ${lineNo}: ident rules (user@address) are not supported: yubin does no RFC 1413 lookups`);
  const ipv6 = /^\[?([0-9a-f:.]+)\]?$/i.exec(address);
  if (ipv6 && address.includes(':')) {
    if (isIP(ipv6[1]!) !== 6) throw new Error(`line ${lineNo}: bad IPv6 address ${address}`);
    return [normalizeIp(ipv6[1]!)];
  }
  if (!/^[0-9.-]+$/.test(address)) throw new Error(`line ${lineNo}: bad address ${JSON.stringify(address)}`);
  const octets = address.split('.');
  const isPrefix = address.endsWith('.');
  if (isPrefix) octets.pop();
  if (octets.length > 4 || (!isPrefix && octets.length !== 4)) {
    // tcprules accepts this, but such a key can never match: say so instead.
    throw new Error(`line ${lineNo}: ${address} is neither a full IPv4 address nor a prefix ending in a dot`);
  }
  let keys = [''];
  for (const octet of octets) {
    const range = /^(\d{1,3})-(\d{1,3})$/.exec(octet);
    let values: number[];
    if (range) {
      const lo = Number(range[1]);
      const hi = Math.min(Number(range[2]), 255);
      if (lo > hi) throw new Error(`line ${lineNo}: empty range ${octet}`);
      values = Array.from({ length: hi - lo + 1 }, (_, k) => lo + k);
    } else if (/^\d{1,3}$/.test(octet) && Number(octet) <= 255) {
      values = [Number(octet)];
    } else {
      throw new Error(`line ${lineNo}: bad octet ${JSON.stringify(octet)} in ${address}`);
    }
    keys = keys.flatMap((k) => values.map((v) => (k ? `${k}.${v}` : String(v))));
  }
  return keys.map((k) => (isPrefix ? `${k}.` : k));
}

/**
 * tcpserver's lookup order: the IP, `=host`, IP prefixes longest first (and
 * CIDR blocks by length), `=.suffix` forms longest first, `=`, then the
 * default rule. `host` is the verified reverse name, when one is known.
 */
export function findRule(rules: RuleSet, rawIp: string, host?: string): Rule | undefined {
  const ip = normalizeIp(rawIp);
  const { keys } = rules;
  const h = host?.toLowerCase().replace(/\.$/, '');
  const hit = (key: string) => keys.get(key);
  let r = hit(ip);
  if (r) return r;
  if (h) {
    r = hit(`=${h}`);
    if (r) return r;
  }
  const family = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
  const prefixes: Array<{ bits: number; rule: Rule }> = [];
  if (family === 'ipv4') {
    const o = ip.split('.');
    for (let n = 3; n >= 1; n--) {
      const rule = hit(o.slice(0, n).join('.') + '.');
      if (rule) prefixes.push({ bits: n * 8, rule });
    }
  }
  for (const c of rules.cidrs) if (c.family === family && c.list.check(ip, family)) prefixes.push({ bits: c.bits, rule: c.rule });
  if (prefixes.length) {
    // Longest prefix wins; at equal length the earlier line does (a dotted prefix and its CIDR twin).
    prefixes.sort((a, b) => b.bits - a.bits || a.rule.line - b.rule.line);
    return prefixes[0]!.rule;
  }
  if (h) {
    for (let i = h.indexOf('.'); i >= 0; i = h.indexOf('.', i + 1)) {
      r = hit(`=${h.slice(i)}`);
      if (r) return r;
    }
    r = hit('=');
    if (r) return r;
  }
  return hit('');
}
