/**
 * Logging from vCPU threads without loading pino there: records are posted to the main thread,
 * which writes them through the machine's logger. vCPU threads log rarely (unclaimed accesses once
 * per address, fatal exits), so the hop costs nothing that matters, and every vCPU thread starts
 * faster without pino's module graph.
 */
import type { MessagePort } from 'node:worker_threads';

export type ThreadLogLevel = 'error' | 'warn' | 'info' | 'debug';
const RANK: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };

/** The subset of pino's API the exit path and device setup use. */
export interface ThreadLogger {
  isLevelEnabled(level: ThreadLogLevel): boolean;
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export interface ThreadLogRecord {
  type: 'log';
  level: ThreadLogLevel;
  obj: object;
  msg: string;
}

/**
 * A logger whose records go to `port` (the worker's parentPort; on the main thread, straight to the
 * machine: main-thread-vcpu.ts) when `level` lets them through.
 */
export function threadLogger(port: Pick<MessagePort, 'postMessage'>, level: string): ThreadLogger {
  const min = RANK[level] ?? RANK.warn!;
  const make = (l: ThreadLogLevel) => (obj: object, msg: string) => {
    if (RANK[l]! >= min) port.postMessage({ type: 'log', level: l, obj, msg } satisfies ThreadLogRecord);
  };
  return { isLevelEnabled: (l) => RANK[l]! >= min, error: make('error'), warn: make('warn'), info: make('info'), debug: make('debug') };
}
