/** The message for a fatal exit: what happened, where (registers), the instruction, and a hint. */
import type { Vcpu } from '../kvm/kvm.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { KvmFlavour } from '../kvm/host.js';
import { translate } from '../arch/x86_64/paging.js';
import { hex } from '../errors.js';
import type { ThreadLogger } from './thread-log.js';

const PVM_HINT =
  'hint: this host\'s /dev/kvm is PVM, where guest kernel code runs in KVM\'s instruction emulator, which lacks some instructions (XRSTOR, INT3, ...); run a PVM-enabled guest kernel here, or use a host with hardware KVM (VMX/SVM)';

/** A reset x86 CPU's first instruction: CS 0xf000 with base 0xffff0000, IP 0xfff0. */
const RESET_RIP = 0xfff0n, RESET_CS_SELECTOR = 0xf000, RESET_CS_BASE = 0xffff0000n;

export function diagnoser(vcpu: Vcpu, mem: GuestMemory | undefined, flavour: KvmFlavour, log: ThreadLogger) {
  return (what: string, insn: Uint8Array | undefined): string => {
    let where = '';
    try {
      const regs = vcpu.getRegs();
      const sregs = vcpu.getSregs();
      const rip = regs.get('rip');
      const cs = sregs.getSegment('cs');
      const [cr0, cr3, cr4, efer] = [sregs.get('cr0'), sregs.get('cr3'), sregs.get('cr4'), sregs.get('efer')];
      let source = 'reported by KVM';
      if (!insn && mem) {
        source = 'read at RIP';
        const linear = cs.l ? rip : cs.base + rip;
        const gpa = translate(mem, linear, cr0, cr3, cr4, efer);
        if (gpa !== undefined) {
          const len = Math.min(15, mem.regions.reduce((n, r) => (gpa >= r.gpa && gpa < r.gpa + r.size ? r.gpa + r.size - gpa : n), 0));
          if (len > 0) insn = mem.read(gpa, len);
        }
      }
      where = ` at RIP ${hex(rip)} (CS ${hex(cs.selector)}, ${cs.l ? '64-bit' : cr0 & 1n ? (cs.db ? '32-bit' : '16-bit protected') : 'real mode'})`;
      if (insn && insn.length > 0) where += `, instruction bytes (${source}) ${Array.from(insn, (b) => b.toString(16).padStart(2, '0')).join(' ')}`;
      // KVM on AMD SVM re-initialises a vCPU after a shutdown (its VMCB is undefined then), so the
      // registers of a triple fault there are those of a CPU just reset: say so rather than let the
      // reader take the reset vector for the place it failed.
      if (rip === RESET_RIP && cs.selector === RESET_CS_SELECTOR && cs.base === RESET_CS_BASE) where += ' (the registers of a vCPU just reset: KVM re-initialised it, as it does after a triple fault on AMD SVM; where it failed is lost)';
      log.error({ regs: regs.toJSON(), cr0: hex(cr0), cr3: hex(cr3), cr4: hex(cr4), efer: hex(efer), cs: { ...cs, base: hex(cs.base) } }, `${what}: vCPU registers`);
    } catch (e) {
      where = ` (registers unavailable: ${(e as Error).message})`;
    }
    const hint = flavour === 'pvm' && /emulation failure/.test(what) ? ` — ${PVM_HINT}` : '';
    return `${what}${where}${hint}`;
  };
}
