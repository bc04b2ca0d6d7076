// Waiting in tests for something that happens on its own time (a guest's progress, an fd closed on
// another thread, a server's reply), without a fixed sleep that is too short on a loaded host.

/** Polls `cond` (which may be async) every 25 ms until it is true (true) or `ms` have passed (false). */
export async function waitFor(cond, ms = 60_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return false;
}
