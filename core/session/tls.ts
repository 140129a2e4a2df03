/**
 * A listener's TLS settings, whatever protocol it speaks.
 */
import type { KeyPair, TlsPolicy } from '../tls.js';

export interface ListenerTls {
  /** `starttls` is STARTTLS on SMTP, STLS on POP3. */
  readonly mode: 'none' | 'starttls' | 'implicit';
  readonly keyPair: KeyPair | undefined;
  /** Protocol versions and suites (the listener's tlsProfile and tlsCiphers). */
  readonly policy: TlsPolicy;
}
