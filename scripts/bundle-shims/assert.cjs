'use strict';
/**
 * What the bundles get for require('assert') (scripts/bundle.mjs aliases it here): the same checks,
 * with node:assert itself loaded only when one fails, to throw its own AssertionError. Loading
 * node:assert at start-up (sonic-boom, thread-stream and yargs' shim require it for a few internal
 * checks) costs `nodevisor run` ~60 ms under nested emulation: its error module sets up colours by
 * creating process.stderr, which loads Node's whole stream stack.
 * Only what those modules call is here: assert() (ok), strictEqual and notStrictEqual.
 */
const real = () => require('node:assert');

function ok(value, message) {
  if (!value) real().ok(value, message);
}
ok.ok = ok;
ok.strictEqual = (actual, expected, message) => {
  if (!Object.is(actual, expected)) real().strictEqual(actual, expected, message);
};
ok.notStrictEqual = (actual, expected, message) => {
  if (Object.is(actual, expected)) real().notStrictEqual(actual, expected, message);
};
module.exports = ok;
