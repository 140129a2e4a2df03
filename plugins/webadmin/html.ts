/**
 * HTML without a template engine: a tagged template that escapes every
 * interpolated value unless it is already HTML (`Html`), so a value from the
 * store or a request can never become markup.
 */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

export type HtmlValue = Html | string | number | boolean | null | undefined | readonly HtmlValue[];

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function render(v: HtmlValue): string {
  if (v instanceof Html) return v.text;
  if (Array.isArray(v)) return v.map(render).join('');
  if (v === null || v === undefined || v === false) return '';
  return escapeHtml(String(v));
}

export function html(strings: TemplateStringsArray, ...values: HtmlValue[]): Html {
  let out = strings[0]!;
  values.forEach((v, i) => (out += render(v) + strings[i + 1]!));
  return new Html(out);
}

/** Served as /webadmin.css: the CSP allows styles from 'self' only, so none are inline. */
export const CSS = `body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#234;color:#fff;padding:.5em 1em;display:flex;gap:1em;align-items:center;flex-wrap:wrap}
header a{color:#fff}header form{margin-left:auto}
main{padding:1em;max-width:70em}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em;border-bottom:1px solid #ccc}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
form.inline{display:inline}
fieldset{border:1px solid #ccc;margin:.5em 0}
label{display:inline-block;margin:.2em .5em .2em 0}
.flash-ok{background:#dfd;border:1px solid #8c8;padding:.5em}
.flash-error{background:#fdd;border:1px solid #c88;padding:.5em}
pre{background:#eee;padding:.5em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.muted{color:#666}
`;
