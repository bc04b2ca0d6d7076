/**
 * Logging: the library takes a pino logger (silent by default); the CLI creates the root one. Logs go
 * to stderr synchronously, from any thread, so a line written just before a crash or exit is not lost
 * and the guest's console on stdout stays clean.
 */
import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger } from 'pino';
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function createLogger(level: LogLevel = 'warn', fd = 2): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, destinationOnFirstWrite(fd));
}

/**
 * pino's synchronous destination on `fd`, made when the first line is written: at the default
 * levels most runs log nothing, and making one costs `run` a few milliseconds of its start-up.
 */
function destinationOnFirstWrite(fd: number): DestinationStream {
  let dest: DestinationStream | undefined;
  return { write: (line: string) => (dest ??= pino.destination({ fd, sync: true })).write(line) };
}

/** A logger writing each line to `dest` as it is logged (the API's PUT /logger: api/output-file.ts). */
export function createLoggerTo(level: LogLevel, dest: { write(line: string): void }): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, dest);
}

/** Writes nothing, ever: so it needs no destination (pino would make one on stdout). */
export const silentLogger: Logger = pino({ level: 'silent' }, { write: () => {} });
