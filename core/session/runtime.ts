/**
 * What a connection of any protocol (SMTP, POP3) runs with: its listener's
 * settings and plugins, and the process-wide things every session uses.
 */
import type { Logger } from 'pino';
import type { ListenerConfig } from '../config/schema.js';
import type { Pipeline } from '../pipeline.js';
import type { SpoolSpace } from '../queue/space.js';
import type { Spool } from '../queue/spool.js';
import type { Services } from '../services/index.js';
import type { Metrics } from '../services/metrics.js';
import type { SharedSlots } from './ip-connections.js';

/** The listener's settings and plugins as they were when the connection arrived; a reload does not change them mid-session. */
export interface ListenerRuntime {
  readonly name: string;
  readonly config: ListenerConfig;
  readonly pipeline: Pipeline;
  /** The deliver-side plugins of the same config: RCPT asks them whether they would take a local recipient. */
  readonly delivery?: Pipeline;
  /** Held while a connection uses these plugins, so a reload closes them only when unused. */
  readonly lease?: { acquire(): void; release(): void };
}

/** Process-wide things a session uses. */
export interface SessionEnv {
  readonly hostname: string;
  readonly spool: Spool;
  /** Whether the spool's filesystem has the configured free space. */
  readonly spoolSpace: SpoolSpace;
  readonly services: Services;
  readonly log: Logger;
  /** The server's metrics (core/services/metrics.ts). */
  readonly metrics: Metrics;
  /** In a cluster worker: connections are counted by the primary, across workers. Absent: counted by each listener. */
  readonly sharedSlots?: SharedSlots;
}
