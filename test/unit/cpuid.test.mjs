import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { vcpuCpuid, parseCpuid, serializeCpuid } from '../../dist/arch/x86_64/cpuid.js';

const supported = serializeCpuid([
  { function: 0, index: 0, flags: 0, eax: 0x1c, ebx: 0x68747541, ecx: 0x444d4163, edx: 0x69746e65 },
  { function: 1, index: 0, flags: 0, eax: 0xa10f11, ebx: 0x01020800, ecx: 0x01202000, edx: 0x178bfbff },
  { function: 0xb, index: 0, flags: 1, eax: 0, ebx: 0, ecx: 0, edx: 1 },
  { function: 0x4000_0000, index: 0, flags: 0, eax: 0x4000_0001, ebx: 0x4b4d564b, ecx: 0x564b4d56, edx: 0x4d },
  { function: 0x8000_0008, index: 0, flags: 0, eax: 0x3030, ebx: 0, ecx: 0x7001, edx: 0 },
]);
const find = (entries, fn, index = 0) => entries.find((e) => e.function === fn && e.index === index);

describe('vcpuCpuid', () => {
  it('gives each vCPU its APIC ID, the hypervisor bit and a topology of N cores', () => {
    const e = parseCpuid(vcpuCpuid(supported, { apicId: 3, cpus: 4 }));
    const l1 = find(e, 1);
    assert.equal(l1.ebx >>> 24, 3);
    assert.equal((l1.ebx >>> 16) & 0xff, 4);
    assert.equal(l1.ebx & 0xffff, 0x0800);
    assert.ok(l1.ecx & (1 << 31));
    assert.ok(l1.edx & (1 << 28));
    assert.deepEqual([find(e, 0xb, 0).ebx, find(e, 0xb, 1).ebx, find(e, 0xb, 1).eax, find(e, 0xb, 1).edx], [1, 4, 2, 3]);
    assert.equal(find(e, 0xb, 2).ecx, 2); // level type 0: end of the list
    assert.equal(find(e, 0x8000_0008).ecx & 0xff, 3);
    assert.equal((find(e, 0x8000_0008).ecx >> 12) & 0xf, 2);
  });

  it('passes hypervisor leaves through unchanged and clears HTT on one CPU', () => {
    const e = parseCpuid(vcpuCpuid(supported, { apicId: 0, cpus: 1 }));
    assert.deepEqual(find(e, 0x4000_0000), find(parseCpuid(supported), 0x4000_0000));
    assert.equal(find(e, 1).edx & (1 << 28), 0);
    assert.equal(find(e, 0xb, 1).eax, 0);
  });
});
