'use strict';
/**
 * What the command line's bundle gets for require('fastify') (scripts/bundle.mjs), which only
 * `serve` makes: fastify and its dependencies bundled into dist/api/fastify-bundle.cjs, run through
 * V8's code cache like the command line itself (src/code-cache.cts), with the cache written at exit.
 * From node_modules, the ~130 modules fastify requires are each resolved, read and compiled at
 * every start.
 * __dirname is that of the bundle requiring this: dist/cli.
 */
const path = require('node:path');
// Not bundled: the bin has loaded it already, and it must be that same module.
const { runCachedBundle } = require(path.join(__dirname, '..', 'code-cache.cjs'));

const fastify = runCachedBundle(path.join(__dirname, '..', 'api', 'fastify-bundle.cjs'), 'serve');
process.once('exit', () => fastify.save());
module.exports = fastify.exports;
