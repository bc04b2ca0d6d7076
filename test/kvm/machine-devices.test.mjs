// The machine as a guest sees it, checked from inside by the C test guest c-machine.elf (booted
// through PVH): ACPI tables, SMP start-up of the APs, the RTC, PCI, power-off, i8042 reset and
// serial input with interrupts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { guest, needsKvm, runCli } from '../helpers/kvm.mjs';

const machine = (cmdline, extra = [], opts = {}) =>
  runCli(['run', '--kernel', guest('c-machine.elf'), '--cmdline', cmdline, '--log-level', 'error', ...extra], { killAfterMs: 60_000, ...opts });

describe('machine devices, seen from a C guest', needsKvm, () => {
  it('ACPI: RSDP, XSDT, FADT, DSDT and MADT with good checksums and our OEM id', async () => {
    const r = await machine('acpi', ['--cpus', '2']);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /acpi: RSDP at e0000/);
    for (const sig of ['FACP', 'APIC']) assert.match(r.stdout, new RegExp(`acpi: ${sig} at 0x[0-9a-f]+, \\d+ bytes, OEM NODEVI, checksum ok`));
    assert.match(r.stdout, /acpi: DSDT at 0x[0-9a-f]+, \d+ bytes, checksum ok/);
    assert.match(r.stdout, /acpi: MADT lists 2 CPUs/);
  });

  for (const cpus of [1, 2, 4]) {
    it(`SMP: with --cpus ${cpus} every AP starts (INIT/SIPI through the in-kernel LAPIC) and increments a shared counter`, async () => {
      const r = await machine('smp', ['--cpus', String(cpus)]);
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.match(r.stdout, new RegExp(`smp: ${cpus - 1} of ${cpus - 1} APs checked in; ${cpus} CPUs up`));
    });
  }

  it("RTC: the guest reads the host's date and time (UTC)", async () => {
    const before = Date.now();
    const r = await machine('rtc');
    assert.equal(r.status, 1, r.stdout + r.stderr);
    const m = /rtc: (\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) UTC/.exec(r.stdout);
    assert.ok(m, r.stdout);
    const guest = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
    assert.ok(guest >= Math.floor(before / 1000) * 1000 - 2000 && guest <= Date.now() + 2000, `guest ${new Date(guest).toISOString()} vs host ${new Date(before).toISOString()}`);
  });

  it('PCI: configuration mechanism 1 enumerates the host bridge at 00:00.0', async () => {
    const r = await machine('pci');
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /pci: 00:00\.0 8086:0d57 class 060000/);
    assert.equal((r.stdout.match(/^pci: /gm) ?? []).length, 1);
  });

  it('poweroff through the ACPI sleep control register ends the VM with status 0', async () => {
    const r = await machine('poweroff');
    assert.match(r.stdout, /poweroff: through the FADT sleep control register/);
    assert.equal(r.status, 0, r.stderr);
  });

  it('i8042 reset ends the VM with the reboot status by default', async () => {
    const r = await machine('reset');
    assert.match(r.stdout, /reset: through the i8042/);
    assert.equal(r.status, 4);
    assert.match(r.stderr, /nodevisor: guest requested a reboot/);
  });

  it('--on-reboot restart boots the guest again after an i8042 reset', async () => {
    const r = await machine('reset', ['--on-reboot', 'restart', '--timeout', '4']);
    const boots = (r.stdout.match(/reset: through the i8042/g) ?? []).length;
    assert.ok(boots >= 2, `booted ${boots} times: ${r.stdout}`);
    assert.equal(r.status, 124);
  });

  it('serial input reaches the guest through RX interrupts (IRQ 4 via the IOAPIC) and is echoed', async () => {
    // Bytes sent before the guest enables the interrupt wait in the UART's FIFO; enabling RDI raises IRQ 4.
    const r = await machine('echo', [], { input: 'hello from the host\nq' });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.equal(r.stdout, 'echo: ready\nhello from the host\necho: bye\n');
  });

  it('RAM beyond the 3 GiB MMIO hole continues above 4 GiB, viewed by the VMM in chunks', async () => {
    const r = await runCli(['run', '--kernel', guest('c-machine.elf'), '--cmdline', 'demo', '--mem', '5G', '--log-level', 'error'], { killAfterMs: 60_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /memory: 0000000000100000-00000000bfffffff RAM\nmemory: 0000000100000000-000000017fffffff RAM/);
  });

  it('the built-in demo guest describes the machine and powers off with status 0', async () => {
    const r = await runCli(['run', '--kernel', guest('c-machine.elf'), '--cmdline', 'demo', '--cpus', '2', '--log-level', 'error'], { killAfterMs: 60_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /nodevisor demo guest/);
    assert.match(r.stdout, /smp: 1 of 1 APs checked in; 2 CPUs up/);
    assert.match(r.stdout, /memory: 0000000000100000-0000000007ffffff RAM/);
    assert.match(r.stdout, /demo: done, powering off/);
  });
});
