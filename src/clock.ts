/**
 * A monotonic clock in milliseconds, for timing and deadlines: what performance.now() gives, without
 * its cost at start-up. Node creates the global `performance` on first use by loading node:perf_hooks
 * and the modules behind it, ~20 ms of `nodevisor run` under nested emulation, for a clock that
 * process.hrtime() reads as well. The origin is arbitrary: only differences mean anything.
 */
export function nowMs(): number {
  const [s, ns] = process.hrtime();
  return s * 1e3 + ns / 1e6;
}
