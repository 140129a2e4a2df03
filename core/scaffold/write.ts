/** Writing a scaffold's files: nothing is half-written over something that was there. */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface ScaffoldFile {
  /** Relative to the scaffold's directory, with / separators. */
  readonly path: string;
  readonly text: string;
}

/** Writes each file (making its folders), in order; returns the paths written. */
export async function writeScaffold(dir: string, files: readonly ScaffoldFile[]): Promise<string[]> {
  const written: string[] = [];
  for (const f of files) {
    const file = path.join(dir, f.path);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, f.text);
    written.push(file);
  }
  return written;
}
