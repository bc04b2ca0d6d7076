/**
 * Logging: the library takes a pino logger (silent by default); the CLI creates the root one. Logs go
 * to stderr synchronously, from any thread, so a line written just before a crash or exit is not lost
 * and the guest's console on stdout stays clean.
 *
 * The loggers made here load pino when they first write a line. Loading it (its module tree:
 * sonic-boom, its transport code, tracing channels) and making the root logger were ~45 ms of a CPU
 * profile of `nodevisor run` under nested emulation; not doing it made the run ~25-30 ms shorter
 * there (40 alternated runs). And most runs, at the default level, log nothing. Until then a level
 * method below the level returns at once, and child() remembers its bindings; the first line makes
 * the real logger (and the parent's, and so on up), then goes on through it.
 */
import type { DestinationStream, Logger, LoggerOptions } from 'pino';
import { loadPino } from './pino-loader.cjs';

export type { Logger } from 'pino';
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** pino's numbers for its levels. */
const LEVEL_VALUES: Readonly<Record<LogLevel, number>> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };
type WritingLevel = Exclude<LogLevel, 'silent'>;
const WRITING_LEVELS = LOG_LEVELS.filter((l): l is WritingLevel => l !== 'silent');

export function createLogger(level: LogLevel = 'warn', fd = 2): Logger {
  return lazyLogger(level, () => {
    const pino = loadPino();
    return pino(rootOptions(pino, level), pino.destination({ fd, sync: true }));
  });
}

/** A logger writing each line to `dest` as it is logged (the API's PUT /logger: api/output-file.ts). */
export function createLoggerTo(level: LogLevel, dest: { write(line: string): void }): Logger {
  return lazyLogger(level, () => {
    const pino = loadPino();
    return pino(rootOptions(pino, level), dest as DestinationStream);
  });
}

/** Writes nothing, ever: so it needs no destination (pino would make one on stdout), and rarely pino. */
export const silentLogger: Logger = lazyLogger('silent', () => loadPino()({ level: 'silent' }, { write: () => {} }));

function rootOptions(pino: ReturnType<typeof loadPino>, level: LogLevel): LoggerOptions {
  return { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
}

/**
 * The part of pino's Logger nodevisor's code uses (level, isLevelEnabled, child, the level methods),
 * with the real logger made by `make` at the first line written. Anything else a caller asks of it
 * (a pino method this does not have) makes the real logger and is answered by it.
 */
function lazyLogger(level: LogLevel, make: () => Logger): Logger {
  let real: Logger | undefined;
  const materialize = (): Logger => (real ??= make());
  const enabled = (l: string): boolean => (LEVEL_VALUES[l as LogLevel] ?? 0) >= LEVEL_VALUES[(real?.level ?? level) as LogLevel];
  const target: Record<string | symbol, unknown> = {
    isLevelEnabled: enabled,
    child: (bindings: Record<string, unknown>, options?: Record<string, unknown>): Logger => {
      if (real) return real.child(bindings, options);
      // A child starts at its parent's level, as pino's do.
      return lazyLogger((options?.level as LogLevel | undefined) ?? level, () => materialize().child(bindings, options));
    },
  };
  for (const l of WRITING_LEVELS) {
    target[l] = (...args: unknown[]): void => {
      if (!enabled(l)) return;
      (materialize()[l] as (...a: unknown[]) => void)(...args);
    };
  }
  return new Proxy(target, {
    get(t, key) {
      if (key === 'level') return real?.level ?? level;
      if (key in t) return t[key];
      // Asked by await and Promise resolution, util.inspect and the like: pino has none of them.
      if (key === 'then' || typeof key === 'symbol') return undefined;
      const v = (materialize() as unknown as Record<string | symbol, unknown>)[key];
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(real) : v;
    },
    set(_t, key, value) {
      if (key === 'level' && !real && (value as string) in LEVEL_VALUES) level = value as LogLevel;
      else (materialize() as unknown as Record<string | symbol, unknown>)[key] = value;
      return true;
    },
  }) as unknown as Logger;
}
