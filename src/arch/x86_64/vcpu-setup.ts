/** Puts a freshly created vCPU into the state a loader asked for. */
import type { Vcpu } from '../../kvm/kvm.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import type { EntryState } from '../../loader/entry.js';
import type { Segment, SegName, KvmSregs } from '../../kvm/regs.js';
import { BOOT_CS, BOOT_DS, BOOT_TSS, GDT_CODE32, GDT_CODE64, GDT_LIMIT, writeBootGdt, writeIdentityPageTables } from './boot-tables.js';
import { BOOT_GDT_ADDR, BOOT_IDT_ADDR } from './layout.js';

const CR0_PE = 1n << 0n;
const CR0_ET = 1n << 4n;
const CR0_NE = 1n << 5n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;

const flat = (selector: number, type: number, long: boolean): Segment => ({
  base: 0n, limit: 0xffff_ffff, selector, type, present: 1, dpl: 0, db: long && type >= 8 ? 0 : 1, s: 1, l: long && type >= 8 ? 1 : 0, g: 1, avl: 0, unusable: 0,
});

function flatSegments(sregs: KvmSregs, long: boolean): void {
  sregs.setSegment('cs', flat(BOOT_CS, 0xb, long));
  for (const name of ['ds', 'es', 'fs', 'gs', 'ss'] as SegName[]) sregs.setSegment(name, flat(BOOT_DS, 0x3, long));
  sregs.setSegment('tr', { base: 0n, limit: 0x67, selector: BOOT_TSS, type: 0xb, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 });
  sregs.setTable('gdt', BOOT_GDT_ADDR, GDT_LIMIT);
  sregs.setTable('idt', BOOT_IDT_ADDR, 0);
}

export function applyEntryState(vcpu: Vcpu, mem: GuestMemory, entry: EntryState): void {
  const sregs = vcpu.getSregs();
  const regs = vcpu.getRegs();
  regs.set('rflags', 0x2);
  switch (entry.mode) {
    case 'real': {
      const base = BigInt(entry.segment * 16);
      for (const name of ['cs', 'ds', 'es', 'fs', 'gs', 'ss'] as SegName[]) sregs.updateSegment(name, { selector: entry.segment, base });
      regs.set('rip', entry.ip).set('rsp', entry.sp);
      break;
    }
    case 'protected32':
      writeBootGdt(mem, GDT_CODE32);
      flatSegments(sregs, false);
      sregs.set('cr0', CR0_PE | CR0_ET | CR0_NE).set('cr4', 0).set('efer', 0);
      regs.set('rip', entry.entry).set('rbx', entry.ebx);
      break;
    case 'long64':
      writeBootGdt(mem, GDT_CODE64);
      flatSegments(sregs, true);
      sregs.set('cr3', writeIdentityPageTables(mem));
      sregs.set('cr4', CR4_PAE).set('cr0', CR0_PE | CR0_ET | CR0_NE | CR0_PG).set('efer', EFER_LME | EFER_LMA);
      regs.set('rip', entry.entry).set('rsi', entry.rsi);
      break;
  }
  vcpu.setSregs(sregs);
  vcpu.setRegs(regs);
}
