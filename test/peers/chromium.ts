/**
 * A headless Chromium for browser tests, driven by playwright-core: the
 * system's own browser (Debian's `chromium`, found on PATH), never one that
 * Playwright downloads. Missing, it skips the test on a developer machine and
 * fails it under CI=true, as `needs()` does for the other peers.
 */
import { spawnSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { Test } from 'tap';
import { needs } from '../helpers.js';

/** Names the browser goes by on PATH: Debian's, then Ubuntu's and others'. */
const NAMES = ['chromium', 'chromium-browser'] as const;

/** Full path of the first Chromium on PATH, or undefined. */
export function chromiumPath(): string | undefined {
  for (const name of NAMES) {
    const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
    const found = r.status === 0 ? r.stdout.trim() : '';
    if (found) return found;
  }
  return undefined;
}

/** Options for `t.test(name, needsChromium(), fn)`: skip without a browser, fail under CI. */
export function needsChromium(): { skip: string | false } {
  return chromiumPath() ? { skip: false } : needs('chromium');
}

/**
 * Launches headless Chromium, closed when `t` ends. Without one, undefined:
 * the test records a skip (or, under CI=true, a failure) and should return.
 * `--no-sandbox`: the tests run as root in containers, where Chromium's
 * sandbox cannot start; the pages are our own.
 */
export async function openBrowser(t: Test): Promise<Browser | undefined> {
  const executablePath = chromiumPath();
  if (!executablePath) {
    const { skip } = needs('chromium');
    if (skip) t.pass('a browser', { skip });
    return undefined;
  }
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout: 30_000,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run', '--no-default-browser-check'],
  });
  t.teardown(() => browser.close());
  return browser;
}

/**
 * Saves a PNG of the page (all of it, not only the viewport) and returns its
 * path: into $YUBIN_SCREENSHOTS if set (kept for looking at after a CI run),
 * else the system's temporary directory. `name` becomes the file name.
 */
export async function saveScreenshot(page: Page, name: string, dir = process.env.YUBIN_SCREENSHOTS ?? path.join(os.tmpdir(), 'yubin-screenshots')): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${name.replace(/[^A-Za-z0-9._-]+/g, '-')}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
