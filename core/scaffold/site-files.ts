/**
 * The files beside a new site's yubin.yaml: the rule and control files its
 * plugins read at start (each must exist, or the plugin refuses to start),
 * the plugins/ folder's README, package.json and .gitignore.
 */

export const TCP_SMTP = `# tcpserver's rules for the listeners that list tcprules (qmail's
# /etc/tcp.smtp), in the text form: yubin reads it directly and re-reads it
# when it changes, so there is no tcprules/cdb step.
#
#   ADDRESS:allow[,VAR="value"...]   or   ADDRESS:deny
#
# ADDRESS is an IP, a prefix (192.168.), a range (10.0.0.1-50), a CIDR block,
# =host.name or empty (the default rule). The most specific rule wins.
# RELAYCLIENT="" lets a client relay without AUTH; RBLSMTPD="" skips the
# DNSBL lookups; MAXCONNIP="N" sets its connection limit.

# This machine may relay (cron, local programs, webmail on localhost).
127.:allow,RELAYCLIENT="",RBLSMTPD=""
::1:allow,RELAYCLIENT="",RBLSMTPD=""

# Your office network, for example:
# 192.0.2.:allow,RELAYCLIENT="",RBLSMTPD=""

# A client that may not connect at all:
# 198.51.100.7:deny

# Everyone else: allowed, checked by the anti-spam plugins.
:allow
`;

export const WHITELIST = `# Clients the anti-spam plugins (rblsmtpd, spamdyke) leave alone, one per
# line: an IP, a CIDR block (192.0.2.0/24) or a prefix (10.1.). The file is
# re-read when it changes. The whitelist/ directory next to it works too:
# an empty file named after an IP marks it (touch whitelist/192.0.2.7).
`;

export const BADMAILFROM = `# Envelope senders refused at RCPT (qmail's control/badmailfrom), one per
# line: a full address, or @domain for the whole domain.
# spammer@example.net
# @spam.example
`;

export const RCPTHOSTS = `# Domains this server takes mail for besides localDomains and the vpopmail
# domains (qmail's control/rcpthosts), e.g. when it is a backup MX. One per
# line; .example.com covers every subdomain.
`;

export const PLUGINS_README = `# Local plugins

A local plugin is one ESM \`.js\` file in this folder whose default export is
a plugin definition:

\`\`\`js
// plugins/no-weekend-mail.js
export default {
  name: 'no-weekend-mail',
  setup({ options }) {
    return {
      hooks: {
        rcpt({ recipient }) {
          const day = new Date().getUTCDay();
          if (recipient.domain !== options.domain || (day !== 0 && day !== 6)) return { action: 'continue' };
          return { action: 'defer', code: 450, enhanced: '4.7.1', text: 'closed for the weekend' };
        },
      },
    };
  },
};
\`\`\`

Name it by its path in a listener's \`plugins\` list in ../yubin.yaml, and key
its options by the same path:

\`\`\`yaml
plugins:
  ./plugins/no-weekend-mail.js: { domain: example.com }
listeners:
  - name: mx
    ...
    plugins: [tcprules, whitelist, ./plugins/no-weekend-mail.js, rcpthosts, vpopmail]
\`\`\`

The package.json next to yubin.yaml says \`"type": "module"\`, so \`.js\` files
here are ES modules. \`yubin check-config -c yubin.yaml\` loads the plugin and
lists its hooks. For TypeScript, typed answers (\`answer.reject(...)\`) and
tests, start a package with \`yubin plugin new yubin-plugin-NAME\` instead.
`;

export const GITIGNORE = `var/
node_modules/
`;

/** An npm package name made from a directory name: lower case, only the characters npm allows. */
export function packageNameFor(dirName: string): string {
  const name = dirName
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[._-]+/, '')
    .slice(0, 214);
  return name || 'yubin-site';
}

/**
 * The site's package.json: private, ESM (for plugins/*.js), and yubin-mail
 * from the directory of the yubin that wrote it, so \`npm install
 * yubin-plugin-x\` here satisfies the plugin's peer dependency on yubin-mail.
 */
export function sitePackageJson(name: string, yubinRoot: string): string {
  const pkg = {
    name,
    private: true,
    description: 'A yubin mail server site: yubin.yaml, its rule files and plugins',
    type: 'module',
    scripts: {
      start: 'yubin serve -c yubin.yaml',
      check: 'yubin check-config -c yubin.yaml',
    },
    dependencies: { 'yubin-mail': `file:${yubinRoot}` },
  };
  return `${JSON.stringify(pkg, null, 2)}\n`;
}
