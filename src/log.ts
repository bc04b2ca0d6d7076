/**
 * Logging: the library takes a pino logger (silent by default); the CLI creates the root one. Logs go
 * to stderr synchronously, from any thread, so a line written just before a crash or exit is not lost
 * and the guest's console on stdout stays clean.
 */
import pino, { type Logger } from 'pino';

export type { Logger } from 'pino';
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function createLogger(level: LogLevel = 'warn', fd = 2): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd, sync: true }));
}

/** A logger writing each line to `dest` as it is logged (the API's PUT /logger: api/output-file.ts). */
export function createLoggerTo(level: LogLevel, dest: { write(line: string): void }): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, dest);
}

export const silentLogger: Logger = pino({ level: 'silent' });
