/** The header collector finds the end of the header section however TCP cut the message. */
import t from 'tap';
import { HeaderCollector } from '../core/smtp/message.js';

const MESSAGE = 'Subject: a\r\nX-B: b\r\n folded\r\n\r\nbody\r\n\r\nmore\r\n';
const HEADERS = [
  { name: 'Subject', value: 'a' },
  { name: 'X-B', value: 'b folded' },
];

t.test('every chunk size from 1 byte to the whole message gives the same headers', async (t) => {
  for (let size = 1; size <= MESSAGE.length; size++) {
    const h = new HeaderCollector(1000);
    for (let i = 0; i < MESSAGE.length; i += size) h.push(Buffer.from(MESSAGE.slice(i, i + size)));
    h.end();
    t.same(h.headers(), HEADERS, `chunks of ${size}`);
  }
});

t.test('no header section, all headers, and a header section over the limit', async (t) => {
  const none = new HeaderCollector(1000);
  none.push(Buffer.from('\r\nbody\r\n'));
  t.same(none.headers(), []);
  const only = new HeaderCollector(1000);
  only.push(Buffer.from('Subject: only\r\n'));
  only.end();
  t.same(only.headers(), [{ name: 'Subject', value: 'only' }]);
  const big = new HeaderCollector(10);
  big.push(Buffer.from('Subject: longer than ten bytes\r\n'));
  t.ok(big.tooLarge);
});
