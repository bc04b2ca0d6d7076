// The watch under coalesced console writes: a kick for writes left untaken from one look to the
// next, looks every WATCH_MS while the guest writes and fewer once it has stopped.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { look, watched, WATCH_IDLE_MS, WATCH_MS } from '../../dist/vmm/queued-writes-watch.js';
import { fakeKvmRing } from '../helpers/fake-kvm-ring.mjs';

/** A ring with KVM's side (write: queue a byte for COM1) and a vCPU's (take: empty it), watched with a kick counter. */
function fakeRing() {
  const k = fakeKvmRing();
  const w = { kicks: 0, ring: k.ring, write: () => k.push(0x3f8, 0x41), take: () => k.ring.take(() => {}) };
  w.watched = watched(k.ring, () => w.kicks++);
  return w;
}

describe('queued-writes watch', () => {
  it('kicks when writes stay queued and untaken from one look to the next, not when a vCPU took them', () => {
    const r = fakeRing();
    r.write();
    assert.equal(look([r.watched]), WATCH_MS, 'writes queued: look again soon');
    assert.equal(r.kicks, 0, 'not at the first look that sees them: the next exit may take them');
    look([r.watched]);
    assert.equal(r.kicks, 1, 'still there at the next look: kicked');
    r.take();
    look([r.watched]);
    r.write();
    look([r.watched]);
    r.take();
    r.write(); // taken and more queued: someone is taking
    look([r.watched]);
    assert.equal(r.kicks, 1);
  });

  it('looks every WATCH_MS while the guest writes, then backs off to WATCH_IDLE_MS', () => {
    const r = fakeRing();
    const delays = [];
    for (let i = 0; i < 4; i++) {
      r.write();
      r.take(); // a vCPU took them at an exit: no kick, but the guest is writing
      delays.push(look([r.watched]));
    }
    for (let i = 0; i < 7; i++) delays.push(look([r.watched]));
    assert.deepEqual(delays, [WATCH_MS, WATCH_MS, WATCH_MS, WATCH_MS, 2 * WATCH_MS, 4 * WATCH_MS, 8 * WATCH_MS, WATCH_IDLE_MS, WATCH_IDLE_MS, WATCH_IDLE_MS, WATCH_IDLE_MS]);
    assert.ok(WATCH_IDLE_MS >= 16 * WATCH_MS, 'an idle machine is looked at at least 16 times less often');
    // A write after the silence, left with no exit: seen at the next look, kicked WATCH_MS later.
    r.write();
    assert.equal(look([r.watched]), WATCH_MS);
    assert.equal(r.kicks, 0);
    look([r.watched]);
    assert.equal(r.kicks, 1);
  });

  it('looks at the pace of the busiest ring', () => {
    const [busy, idle] = [fakeRing(), fakeRing()];
    for (let i = 0; i < 10; i++) look([busy.watched, idle.watched]);
    assert.equal(look([busy.watched, idle.watched]), WATCH_IDLE_MS);
    busy.write();
    assert.equal(look([busy.watched, idle.watched]), WATCH_MS);
    assert.equal(idle.watched.period, WATCH_IDLE_MS);
  });
});
