/** The one-piece RETR encoder against the streaming one and the size counter, on random messages. */
import t from 'tap';
import { encodeWhole, WireEncoder, WireSizeCounter } from '../core/pop3/wire-format.js';

/** Random bytes from an alphabet rich in the characters that matter: LF, CR, dot. */
function randomMessage(seed: number): Buffer {
  let x = seed;
  const next = () => ((x = (x * 1103515245 + 12345) & 0x7fffffff), x);
  const alphabet = [0x0a, 0x0d, 0x2e, 0x41, 0x20, 0x0a, 0x2e, 0x42];
  return Buffer.from(Array.from({ length: next() % 300 }, () => alphabet[next() % alphabet.length]!));
}

t.test('encodeWhole sends what the streaming encoder sends, and as many octets as the size says', async (t) => {
  const head = Buffer.from('+OK\r\n');
  let checked = 0;
  for (let seed = 1; seed <= 2000; seed++) {
    const data = randomMessage(seed);
    const whole = encodeWhole(data, head);
    const streamed = new WireEncoder();
    // Split anywhere: a CR at the end of one chunk and its LF in the next must come out the same.
    const cut = seed % (data.length + 1);
    const expected = Buffer.concat([head, streamed.encode(data.subarray(0, cut)), streamed.encode(data.subarray(cut)), streamed.finish()]);
    if (!whole.equals(expected)) {
      t.fail(`seed ${seed}: ${JSON.stringify(data.toString('latin1'))}`);
      return;
    }
    const counter = new WireSizeCounter();
    counter.add(data);
    // Undo the dot-stuffing: what is left between the +OK line and the terminator is the size.
    const body = whole.subarray(head.length, whole.length - 3).toString('latin1').replace(/(^|\r\n)\./g, '$1');
    if (Buffer.byteLength(body, 'latin1') !== counter.size) {
      t.fail(`seed ${seed}: size ${counter.size}, sent ${body.length}`);
      return;
    }
    checked++;
  }
  t.equal(checked, 2000, 'all agree');
  t.equal(encodeWhole(Buffer.from('.a\nb\r\n.\nc'), head).toString(), '+OK\r\n..a\r\nb\r\n..\r\nc\r\n.\r\n', 'a worked example');
});
