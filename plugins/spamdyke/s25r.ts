/**
 * S25R (Selective SMTP Rejection, Y. Asami): end-user machines have generic,
 * number-laden PTR names, real mail servers usually do not. Rule 0 is "no
 * usable PTR name"; rules 1-6 are the six published regexes, applied to the
 * client's PTR name (case-insensitive).
 */

export const S25R_RULES: ReadonlyArray<{ readonly rule: number; readonly re: RegExp; readonly meaning: string }> = [
  { rule: 1, re: /^[^.]*[0-9][^0-9.]+[0-9].*\./i, meaning: 'first label has two digit runs separated by non-digits' },
  { rule: 2, re: /^[^.]*[0-9]{5}/i, meaning: 'first label has 5+ consecutive digits' },
  { rule: 3, re: /^([^.]+\.)?[0-9][^.]*\.[^.]+\..+\.[a-z]/i, meaning: 'first or second label starts with a digit, three more levels above' },
  { rule: 4, re: /^[^.]*[0-9]\.[^.]*[0-9]-[0-9]/i, meaning: 'first label ends in a digit, second has digit-hyphen-digit' },
  { rule: 5, re: /^[^.]*[0-9]\.[^.]*[0-9]\.[^.]+\..+\./i, meaning: '5+ levels, both lowest labels end in a digit' },
  { rule: 6, re: /^(dhcp|dialup|ppp|[achrsvx]?dsl)[^.]*[0-9]/i, meaning: 'first label starts with dhcp/dialup/ppp/xDSL and has a digit' },
];

/**
 * The S25R rule a PTR name matches: 0 when there is no name, 1-6 for the
 * first regex that matches, undefined when the name looks like a server.
 */
export function s25rMatch(name: string | undefined): number | undefined {
  if (name === undefined || name === '') return 0;
  const n = name.replace(/\.$/, '');
  for (const { rule, re } of S25R_RULES) if (re.test(n)) return rule;
  return undefined;
}
