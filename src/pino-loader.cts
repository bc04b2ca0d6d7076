/**
 * pino, loaded when first called (log.ts says why). CommonJS, so that this is a plain require():
 * esbuild keeps a bundled module's require inside the function that makes it, so the bundle runs
 * pino's module code only then too; an ES module could only import it up front, or asynchronously.
 */
import type pinoModule = require('pino');

export function loadPino(): typeof pinoModule {
  return require('pino') as typeof pinoModule;
}
