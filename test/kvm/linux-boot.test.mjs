// The small kernel from the guest kit, booted through PVH: its own boot log proves the boot path
// (memory map, command line, ACPI tables, MADT, SMP, kvm-clock, serial console). On a PVM host the
// kernel then stops at an instruction KVM's emulator lacks, and nodevisor must end with the
// emulation-failure status and message, not hang.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { needsKvm, runCli } from '../helpers/kvm.mjs';
import { needsKit, smallVmlinux, withKernelSymbols } from '../helpers/kit.mjs';
import { detectFlavour } from '../../dist/kvm/host.js';

const pvm = detectFlavour() === 'pvm';
const gate = needsKvm.skip ? needsKvm : needsKit;

describe('small kernel boot log (PVH)', gate, () => {
  for (const cpus of [1, 2, 4]) {
    it(`--cpus ${cpus}: our e820 map, command line, ACPI tables, MADT, SMP, kvm-clock and ttyS0`, async () => {
      const cmdline = `console=ttyS0 noxsave panic=-1 nodevisor.test=${cpus}`;
      const r = await runCli(['run', '--kernel', smallVmlinux, '--mem', '256M', '--cpus', String(cpus), '--cmdline', cmdline, '--timeout', '90', '--log-level', 'error'], { killAfterMs: 120_000 });
      const log = r.stdout;
      assert.match(log, /^Linux version 6\.1\./m);
      assert.ok(log.includes(`Command line: ${cmdline}\r\n`), 'the kernel got our command line (the console ends lines with CRLF)');
      // Our map: RAM to the EBDA, EBDA and BIOS area reserved (Linux folds the legacy hole between them
      // into one reserved range), RAM from 1 MiB to the end of --mem.
      assert.deepEqual(log.match(/^BIOS-e820: .*$/gm).map((l) => l.trim()), [
        'BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable',
        'BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved',
        'BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable',
      ]);
      assert.match(log, /ACPI: RSDP 0x00000000000E0000 000024 \(v02 NODEVI\)/);
      for (const sig of ['XSDT', 'FACP', 'DSDT', 'APIC']) assert.match(log, new RegExp(`ACPI: ${sig} 0x00000000000E0[0-9A-F]{3} [0-9A-F]{6} \\(v0\\d NODEVI NODEVISR 00000001 NVSR 00000001\\)`), sig);
      assert.match(log, new RegExp(`IOAPIC\\[0\\]: apic_id ${cpus}, version 17, address 0xfec00000, GSI 0-23`));
      assert.match(log, /ACPI: INT_SRC_OVR \(bus 0 bus_irq 0 global_irq 2 dfl dfl\)/);
      assert.match(log, /ACPI: LAPIC_NMI \(acpi_id\[0xff\] dfl dfl lint\[0x1\]\)/);
      assert.match(log, new RegExp(`smpboot: Allowing ${cpus} CPUs, 0 hotplug CPUs`));
      assert.match(log, /kvm-clock: Using msrs/);
      assert.match(log, /Hypervisor detected: KVM/);
      // Our CPUID passes KVM's PV_UNHALT on: with more than one vCPU, lock waiters halt rather than
      // spin (test-and-set with interrupts off, which kept an emulated CPU of CI's nested VM in the
      // guest for minutes while the lock's holder waited for that CPU).
      assert.match(log, cpus > 1 ? /kvm-guest: PV spinlocks enabled/ : /kvm-guest: PV spinlocks disabled, single CPU/);
      assert.match(log, /printk: console \[ttyS0\] enabled/);
      if (pvm) {
        assert.equal(r.status, 8, `expected the emulation-failure status, got ${r.status}: ${r.stderr.slice(-500)}`);
        assert.match(r.stderr, /nodevisor: vcpu0: emulation failure \(KVM_EXIT_INTERNAL_ERROR\) at RIP 0xffffffff[0-9a-f]{8} \(CS 0x10, 64-bit\)/);
        assert.match(r.stderr, /hint: this host's \/dev\/kvm is PVM/);
      } else {
        // Hardware KVM boots on; without a root file system the kernel panics and panic=-1 reboots.
        // On failure, the console's last lines say where the guest was (after a triple fault SVM
        // leaves the registers in their reset state, so the log's register dump cannot).
        // A timeout names where each vCPU was; the kernel's symbols say in which function.
        assert.equal(r.status, 4, r.status === 4 ? undefined : `${withKernelSymbols(r.stderr.slice(-500), smallVmlinux)}\nconsole tail:\n${log.slice(-1500)}`);
      }
    });
  }
});
