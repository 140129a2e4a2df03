/**
 * Reads D. J. Bernstein's constant database (cdb) files: what tcprules
 * compiles tcp.smtp into, qmail-newmrh makes of morercpthosts, qmail-newu of
 * users/assign, and vpopmail keeps beside vpasswd. Read-only, whole file in
 * memory (these files are small); a file that does not follow the format is
 * an error naming the offset, never a partial answer.
 *
 * Layout: 256 (position, slots) pairs of 32-bit little-endian numbers, then
 * the records (key length, data length, key, data), then the 256 hash tables.
 */

export interface CdbRecord {
  readonly key: Buffer;
  readonly data: Buffer;
}

export class CdbError extends Error {}

const HEADER = 2048;

/** cdb's hash: h = 5381, then h = ((h << 5) + h) ^ byte, in 32 bits. */
function cdbHash(key: Uint8Array): number {
  let h = 5381;
  for (const c of key) h = (((h << 5) + h) ^ c) >>> 0;
  return h;
}

function tablesStart(buf: Buffer): number {
  if (buf.length < HEADER) throw new CdbError(`not a cdb: ${buf.length} bytes, shorter than the 2048-byte header`);
  let start = buf.length;
  for (let i = 0; i < 256; i++) {
    const pos = buf.readUInt32LE(i * 8);
    const slots = buf.readUInt32LE(i * 8 + 4);
    if (pos < HEADER || pos + slots * 8 > buf.length) throw new CdbError(`not a cdb: hash table ${i} at ${pos} (${slots} slots) lies outside the file`);
    start = Math.min(start, pos);
  }
  return start;
}

function recordAt(buf: Buffer, pos: number, end: number): CdbRecord & { next: number } {
  if (pos + 8 > end) throw new CdbError(`cdb record at ${pos}: truncated header`);
  const klen = buf.readUInt32LE(pos);
  const dlen = buf.readUInt32LE(pos + 4);
  const next = pos + 8 + klen + dlen;
  if (next > end) throw new CdbError(`cdb record at ${pos}: key ${klen} + data ${dlen} bytes run past the records`);
  return { key: buf.subarray(pos + 8, pos + 8 + klen), data: buf.subarray(pos + 8 + klen, next), next };
}

/** Every record in file order (the order the writer added them; a key may repeat). */
export function* cdbRecords(buf: Buffer): Generator<CdbRecord> {
  const end = tablesStart(buf);
  for (let pos = HEADER; pos < end; ) {
    const { key, data, next } = recordAt(buf, pos, end);
    yield { key, data };
    pos = next;
  }
}

/** Every value stored under `key`, in the order they were added (what cdb_findnext walks). */
export function cdbGet(buf: Buffer, key: string | Uint8Array): Buffer[] {
  const k = typeof key === 'string' ? Buffer.from(key) : Buffer.from(key);
  const end = tablesStart(buf);
  const h = cdbHash(k);
  const table = (h & 255) * 8;
  const pos = buf.readUInt32LE(table);
  const slots = buf.readUInt32LE(table + 4);
  const out: Buffer[] = [];
  if (slots === 0) return out;
  let slot = (h >>> 8) % slots;
  for (let n = 0; n < slots; n++) {
    const at = pos + slot * 8;
    const sh = buf.readUInt32LE(at);
    const rp = buf.readUInt32LE(at + 4);
    if (rp === 0) break; // an empty slot ends the probe
    if (sh === h) {
      const r = recordAt(buf, rp, end);
      if (r.key.equals(k)) out.push(r.data);
    }
    slot = (slot + 1) % slots;
  }
  return out;
}
