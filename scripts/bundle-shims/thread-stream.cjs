'use strict';
/**
 * What pino's transport module gets for require('thread-stream') in the bundles (scripts/bundle.mjs):
 * the real class, loaded when pino first makes one (pino.transport(), which nodevisor does not
 * use). Loaded at start-up, it requires node:worker_threads, and with it Node's worker and stream
 * modules, for nothing.
 */
module.exports = function ThreadStream(options) {
  const Real = require('thread-stream');
  return new Real(options);
};
