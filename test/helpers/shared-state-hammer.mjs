import { SharedState } from '../../dist/devices/shared-state.js';

/** Counts itself in (word 4), waits for word 2 (the start flag), then increments word 1 `rounds` times under the lock, non-atomically. */
export function hammer(buffer, rounds, useLock = true) {
  const s = new SharedState(buffer);
  const w = s.words;
  Atomics.add(w, 4, 1);
  while (Atomics.load(w, 2) === 0); // all threads start together
  for (let i = 0; i < rounds; i++) {
    if (useLock) s.lock();
    const v = w[1];
    for (let k = 0; k < 20; k++) w[3] = k; // a window for another thread to interleave
    w[1] = v + 1;
    if (useLock) s.unlock();
  }
}
