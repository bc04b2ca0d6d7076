/**
 * What kind of KVM this host offers. On VMX/SVM the guest runs natively; on PVM (kvm_pvm, KVM on
 * top of another hypervisor without hardware virtualization) guest user code runs natively but guest
 * supervisor code goes through KVM's instruction emulator, which is slow and lacks some instructions
 * (XRSTOR, INT3, ...): only PVM-enabled guest kernels run at speed there.
 */
import { existsSync, readFileSync } from 'node:fs';

export type KvmFlavour = 'vmx' | 'svm' | 'pvm' | 'unknown';

export function detectFlavour(sysModule = '/sys/module'): KvmFlavour {
  if (existsSync(`${sysModule}/kvm_pvm`)) return 'pvm';
  if (existsSync(`${sysModule}/kvm_intel`)) return 'vmx';
  if (existsSync(`${sysModule}/kvm_amd`)) return 'svm';
  // Built-in vendor modules leave no /sys/module entry with parameters; fall back to CPU flags.
  try {
    const flags = readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1] ?? '';
    if (/\bvmx\b/.test(flags)) return 'vmx';
    if (/\bsvm\b/.test(flags)) return 'svm';
  } catch {
    /* no /proc: unknown */
  }
  return 'unknown';
}

let flavour: KvmFlavour | undefined;

/**
 * This host's flavour, found once per process (three file lookups less per machine): a KVM module
 * cannot be swapped while we hold /dev/kvm open (Kvm.shared), which keeps it loaded.
 */
export function hostFlavour(): KvmFlavour {
  return (flavour ??= detectFlavour());
}

export const FLAVOUR_DESCRIPTION: Record<KvmFlavour, string> = {
  vmx: 'Intel VMX (hardware virtualization)',
  svm: 'AMD SVM (hardware virtualization)',
  pvm: 'PVM (kvm_pvm: software-assisted, guest kernel code is instruction-emulated)',
  unknown: 'unknown',
};

/** The warning shown once at start on a PVM host. */
export const PVM_WARNING =
  'this host\'s /dev/kvm is PVM (kvm_pvm): guest kernel code runs in KVM\'s instruction emulator, slowly, and stops at instructions the emulator lacks; only PVM-enabled guest kernels run at full speed here';
