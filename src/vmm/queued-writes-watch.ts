/**
 * The safety net under coalesced console writes. A vCPU takes the writes KVM queued in the ring at
 * its next exit; Linux's 8250 driver always makes one at once (it reads LSR before each byte, IIR
 * after each burst). A guest that writes THR and then waits in HLT for the THR-empty interrupt makes
 * none, and its bytes (and that interrupt) would wait for good. So the main thread looks at every
 * running machine's ring each WATCH_MS, and kicks a vCPU out of the guest when writes stayed queued
 * and untaken for a whole period: the kicked loop takes them first thing (vcpu-loop.ts).
 * One timer for all machines of the process, running only while one runs.
 */
import type { CoalescedRing } from '../kvm/coalesced-ring.js';

const WATCH_MS = 10;

interface Watched {
  readonly ring: CoalescedRing;
  readonly kick: () => void;
  /** The ring's `first` at the last look while writes were queued; -1 when none were. */
  seen: number;
}

const watched = new Set<Watched>();
let timer: NodeJS.Timeout | undefined;

function look(): void {
  for (const w of watched) {
    if (!w.ring.pending) {
      w.seen = -1;
      continue;
    }
    const first = w.ring.first;
    if (first === w.seen) w.kick(); // nothing taken since the last look
    w.seen = first;
  }
}

/** Watches `ring` until the returned function is called; `kick` gets a vCPU of its VM out of KVM_RUN. */
export function watchQueuedWrites(ring: CoalescedRing, kick: () => void): () => void {
  const w: Watched = { ring, kick, seen: -1 };
  watched.add(w);
  timer ??= setInterval(look, WATCH_MS).unref();
  return () => {
    watched.delete(w);
    if (watched.size === 0 && timer) {
      clearInterval(timer);
      timer = undefined;
    }
  };
}
