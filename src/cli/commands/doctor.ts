/** `nodevisor doctor`: what this host's KVM is and whether nodevisor can use it. */
import type { CommandModule } from 'yargs';
import { Kvm, REQUIRED_CAPS } from '../../kvm/kvm.js';
import { detectFlavour, FLAVOUR_DESCRIPTION, PVM_WARNING } from '../../kvm/host.js';
import { addonPath } from '../../native/binding.js';
import { writeOut } from '../stdout.js';

export const doctorCommand: CommandModule = {
  command: 'doctor',
  describe: 'Check this host: KVM flavour, API version and the capabilities nodevisor needs',
  handler: () => {
    const flavour = detectFlavour();
    const lines: string[] = [];
    lines.push(`addon:       ${addonPath()}`);
    lines.push(`flavour:     ${flavour} — ${FLAVOUR_DESCRIPTION[flavour]}`);
    let kvm: Kvm;
    try {
      kvm = Kvm.open();
    } catch (e) {
      // What is known so far still helps: which addon, which module; then the one-line error.
      writeOut(lines.join('\n') + '\n');
      throw e;
    }
    try {
      lines.push(`/dev/kvm:    API version 12, vCPU mmap size ${kvm.vcpuMmapSize} bytes`);
      let missing = 0;
      for (const cap of REQUIRED_CAPS) {
        const v = kvm.checkExtension(cap);
        if (v <= 0) missing++;
        lines.push(`  KVM_CAP_${cap.padEnd(22)} ${v > 0 ? `ok (${v})` : 'MISSING'}`);
      }
      lines.push(`  KVM_CAP_${'MAX_VCPUS'.padEnd(22)} ${kvm.checkExtension('MAX_VCPUS')}`);
      lines.push(`  KVM_CAP_${'NR_MEMSLOTS'.padEnd(22)} ${kvm.checkExtension('NR_MEMSLOTS')}`);
      if (flavour === 'pvm') lines.push(`warning:     ${PVM_WARNING}`);
      lines.push(missing === 0 ? 'result:      ok — nodevisor can run guests on this host' : `result:      ${missing} required capabilities missing`);
      writeOut(lines.join('\n') + '\n');
      if (missing > 0) process.exitCode = 1;
    } finally {
      kvm.close();
    }
  },
};
