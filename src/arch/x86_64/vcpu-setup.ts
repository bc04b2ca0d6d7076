/** Puts a freshly created vCPU into the state a loader asked for. */
import type { Vcpu } from '../../kvm/kvm.js';
import type { EntryState } from '../../loader/entry.js';
import type { SegName } from '../../kvm/regs.js';

export function applyEntryState(vcpu: Vcpu, entry: EntryState): void {
  const sregs = vcpu.getSregs();
  const base = BigInt(entry.segment * 16);
  for (const name of ['cs', 'ds', 'es', 'fs', 'gs', 'ss'] as SegName[]) sregs.updateSegment(name, { selector: entry.segment, base });
  vcpu.setSregs(sregs);
  const regs = vcpu.getRegs();
  regs.set('rip', entry.ip).set('rsp', entry.sp).set('rflags', 0x2);
  vcpu.setRegs(regs);
}
