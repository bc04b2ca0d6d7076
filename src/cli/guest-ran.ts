/**
 * Whether this process's `run` got as far as running a guest, for the bin's code cache
 * (src/cli/nodevisor.cts). `run` has a cache of its own, written at exit by the first run that finds
 * none, with the functions V8 had compiled by then. Written by a run that stopped at a refused flag
 * or printed its help, it held a fraction of a booting run's functions (405 KB against 548 KB), and
 * every later run loaded it (V8 accepts it: same bundle, same Node) and compiled the rest at each
 * start, for as long as that bundle was installed: about a quarter of a second of every
 * `nodevisor run` under nested emulation (+217 ms in a paired A/B against a build with a good cache
 * that lacked another change worth 38 ms).
 */
let ran = false;

/** Called by `run` once its guest has run (to its end, or to the command's). */
export function noteGuestRan(): void {
  ran = true;
}

export function guestRan(): boolean {
  return ran;
}
