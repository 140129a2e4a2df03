/**
 * The browser harness itself (test/peers/chromium.ts): headless Chromium
 * fills and posts a form on a small Fastify server, reads the answer, and
 * cannot see an HttpOnly cookie from script. If this fails, so will every
 * browser test after it, for the same reason.
 */
import { readFile } from 'node:fs/promises';
import formbody from '@fastify/formbody';
import Fastify from 'fastify';
import t from 'tap';
import { openBrowser, saveScreenshot } from './peers/chromium.js';
import { tempDir } from './helpers.js';

const html = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const FORM = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Form</title></head>
<body>
  <h1>Say hello</h1>
  <form method="post" action="/echo">
    <label>Name <input name="name" autocomplete="off"></label>
    <button type="submit">Send</button>
  </form>
</body></html>`;

t.test('headless Chromium posts a form and cannot read an HttpOnly cookie', async (t) => {
  const app = Fastify();
  await app.register(formbody);
  app.get('/', async (_req, reply) => {
    reply.header('set-cookie', ['session=s3cret; HttpOnly; Path=/; SameSite=Strict', 'visible=yes; Path=/; SameSite=Strict']);
    return reply.type('text/html; charset=utf-8').send(FORM);
  });
  app.post('/echo', async (req, reply) => {
    const name = String((req.body as Record<string, unknown>).name ?? '');
    const sent = /(?:^|;\s*)session=s3cret(?:;|$)/.test(req.headers.cookie ?? '') ? 'yes' : 'no';
    return reply.type('text/html; charset=utf-8').send(`<!doctype html><html><head><meta charset="utf-8"><title>Echo</title></head><body><p id="result">Hello, ${html(name)}!</p><p id="cookie">session cookie sent: ${sent}</p></body></html>`);
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const addr = app.server.address();
  if (!addr || typeof addr === 'string') throw new Error('no port');
  const base = `http://127.0.0.1:${addr.port}`;

  const browser = await openBrowser(t);
  if (!browser) return;
  const page = await browser.newPage();
  page.setDefaultTimeout(5_000);

  await page.goto(`${base}/`);
  t.equal(await page.title(), 'Form');
  const name = 'Wörld <b>&</b>';
  await page.fill('input[name=name]', name);
  await Promise.all([page.waitForURL(`${base}/echo`), page.click('button[type=submit]')]);
  t.equal(await page.textContent('#result'), `Hello, ${name}!`, 'the POSTed name comes back as text, not markup');
  t.equal(await page.locator('#result b').count(), 0, 'no element made from the input');
  t.equal(await page.textContent('#cookie'), 'session cookie sent: yes', 'the browser sent the HttpOnly cookie with the POST');

  const seen = String(await page.evaluate('document.cookie'));
  t.match(seen, /(?:^|; )visible=yes(?:;|$)/, 'document.cookie works (a plain cookie is there)');
  t.notMatch(seen, /session/, 'the HttpOnly cookie is not visible to document.cookie');
  const jar = await page.context().cookies(base);
  t.same(jar.find((c) => c.name === 'session')?.httpOnly, true, 'the browser keeps it, flagged HttpOnly');

  // Kept in $YUBIN_SCREENSHOTS when set (to check the page renders text, not boxes), else thrown away.
  const shot = await saveScreenshot(page, 'chromium-smoke', process.env.YUBIN_SCREENSHOTS ?? (await tempDir(t)));
  const png = await readFile(shot);
  t.same([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'screenshot is a PNG');
  t.ok(png.length > 1000, `screenshot has content (${png.length} bytes)`);
});
