/**
 * The yubin-mail package that is running: its directory and package.json.
 * Generated sites and plugins point at it with a `file:` dependency, because
 * yubin-mail is not on the npm registry yet; a plugin's peer dependency on
 * yubin-mail must still be satisfied when someone installs it next to a site.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const PACKAGE_NAME = 'yubin-mail';

export interface RunningPackage {
  /** Absolute directory holding yubin-mail's package.json. */
  readonly root: string;
  readonly version: string;
  readonly dependencies: Readonly<Record<string, string>>;
  readonly devDependencies: Readonly<Record<string, string>>;
}

interface PackageJson {
  name?: string;
  version?: string;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

/**
 * Walks up from this module (dist/core/scaffold/ when built, core/scaffold/ under a
 * loader) to the first package.json named yubin-mail, so a renamed dist layout
 * or a symlinked install still finds the right one.
 */
export function runningPackage(from: string = fileURLToPath(import.meta.url)): RunningPackage {
  let dir = path.dirname(from);
  for (;;) {
    const file = path.join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as PackageJson;
      if (pkg.name === PACKAGE_NAME) {
        return { root: dir, version: pkg.version ?? '0.0.0', dependencies: pkg.dependencies ?? {}, devDependencies: pkg.devDependencies ?? {} };
      }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json named ${PACKAGE_NAME} above ${from}`);
    dir = up;
  }
}
