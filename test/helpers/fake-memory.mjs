// Guest memory over a plain ArrayBuffer, for device and loader tests that need no KVM.
import { GuestMemory } from '../../dist/memory/guest-memory.js';

export function fakeMemory(size, gpa = 0) {
  const bytes = new Uint8Array(size);
  return new GuestMemory([{ gpa, size, bytes }]);
}
