/**
 * The safety net under coalesced console writes. A vCPU takes the writes KVM queued in the ring at
 * its next exit, but for the LSR read Linux's console makes before each byte, which leaves up to 64
 * queued so that they go out together (serial-8250.ts, mayLeaveQueued); the interrupt-driven writer
 * reads IIR after each burst, which takes them. So the last bytes of a console line wait for some
 * other exit, and a guest that writes THR and then waits in HLT for the THR-empty interrupt makes
 * none: its bytes (and that interrupt) would wait for good. So the main thread looks at every
 * running machine's ring, and kicks a vCPU out of the guest when writes stayed queued and untaken
 * from one look to the next: the kicked loop takes them first thing (vcpu-loop.ts). One timer for
 * all machines of the process, running only while one runs.
 *
 * How often: every WATCH_MS while a guest writes to its console, backing off to WATCH_IDLE_MS once it
 * has stopped. Every WATCH_MS for good, an idle guest's VMM woke 100 times a second: under nested
 * emulation its main thread took 75 ms of CPU a second with the guest idle at a shell, against QEMU's
 * 26 ms for its whole main loop. The cost of the back-off: after a console silence, a byte left
 * queued without an exit comes out up to WATCH_IDLE_MS + WATCH_MS late (the first look after it
 * sees it queued, the next one, WATCH_MS later, kicks).
 */
import type { CoalescedRing } from '../kvm/coalesced-ring.js';

export const WATCH_MS = 10;
export const WATCH_IDLE_MS = 160;

export interface Watched {
  readonly ring: CoalescedRing;
  readonly kick: () => void;
  /** The ring's `first` at the last look while writes were queued; -1 when none were. */
  seen: number;
  /** The ring's `last` at the last look: a change means the guest wrote meanwhile. */
  last: number;
  /** This ring's time between looks: WATCH_MS while its guest writes, doubling up to WATCH_IDLE_MS after. */
  period: number;
}

/** A ring to watch, as it is now: looked at again WATCH_MS later. */
export function watched(ring: CoalescedRing, kick: () => void): Watched {
  return { ring, kick, seen: -1, last: ring.last, period: WATCH_MS };
}

/** One look at each ring: kicks where writes stayed untaken since the last look. Returns the milliseconds until the next look. */
export function look(rings: Iterable<Watched>): number {
  let next = WATCH_IDLE_MS;
  for (const w of rings) {
    const last = w.ring.last;
    const wrote = last !== w.last;
    w.last = last;
    const pending = w.ring.pending;
    if (pending) {
      const first = w.ring.first;
      if (first === w.seen) w.kick(); // nothing taken since the last look
      w.seen = first;
    } else w.seen = -1;
    w.period = wrote || pending ? WATCH_MS : Math.min(2 * w.period, WATCH_IDLE_MS);
    next = Math.min(next, w.period);
  }
  return next;
}

const all = new Set<Watched>();
let timer: NodeJS.Timeout | undefined;

function schedule(ms: number): void {
  clearTimeout(timer);
  timer = setTimeout(() => schedule(look(all)), ms).unref();
}

/** Watches `ring` until the returned function is called; `kick` gets a vCPU of its VM out of KVM_RUN. */
export function watchQueuedWrites(ring: CoalescedRing, kick: () => void): () => void {
  const w = watched(ring, kick);
  all.add(w);
  schedule(WATCH_MS); // a new guest's first looks come soon, whatever the others' pace
  return () => {
    all.delete(w);
    if (all.size === 0) {
      clearTimeout(timer);
      timer = undefined;
    }
  };
}
