/**
 * The guest-physical memory map (design.md): RAM from 0, a 32-bit MMIO hole from 3 GiB to 4 GiB
 * (PCI BARs, IOAPIC, LAPIC, KVM's TSS and identity-map pages), RAM beyond the hole above 4 GiB.
 */

/** Start of the 32-bit MMIO hole; RAM above this goes above 4 GiB. */
export const MMIO_HOLE_START = 0xc000_0000;
export const MMIO_HOLE_END = 0x1_0000_0000;

/** KVM needs three pages for the real-mode TSS and one for the identity map (Intel only), in the hole. */
export const KVM_TSS_ADDR = 0xfffb_d000;
export const KVM_IDENTITY_MAP_ADDR = 0xfffb_c000;

/** Flat images: kvmtool's convention, real mode at 0x1000:0000 with the stack at 0x1000:8000. */
export const FLAT_LOAD_ADDR = 0x1_0000;
export const FLAT_SEGMENT = 0x1000;
export const FLAT_SP = 0x8000;

/** Boot data below 1 MiB (design.md): GDT, IDT, PVH start info, zero page, page tables, command line. */
export const BOOT_GDT_ADDR = 0x500;
export const BOOT_IDT_ADDR = 0x520;
export const PVH_INFO_ADDR = 0x6000; // hvm_start_info, then its memory map and module list (one page)
export const ZERO_PAGE_ADDR = 0x7000; // boot_params
export const PML4_ADDR = 0x9000; // identity map of the first 4 GiB: PML4, one PDPT, four PDs of 2 MiB pages
export const PDPT_ADDR = 0xa000;
export const PD_ADDR = 0xb000; // 0xb000-0xefff
export const CMDLINE_ADDR = 0x2_0000;
export const CMDLINE_MAX = 4096;
/** Where kernels (bzImage protected-mode code) are loaded: 1 MiB, as the boot protocol expects. */
export const KERNEL_LOAD_ADDR = 0x10_0000;

/** The smallest RAM nodevisor accepts (boot data below 1 MiB plus room for a kernel). */
export const MIN_MEM = 1 << 20;

/** RAM regions (gpa, size, offset into the one host mapping) for `memBytes` of guest RAM. */
export function ramLayout(memBytes: number): { gpa: number; size: number; offset: number }[] {
  if (memBytes <= MMIO_HOLE_START) return [{ gpa: 0, size: memBytes, offset: 0 }];
  return [
    { gpa: 0, size: MMIO_HOLE_START, offset: 0 },
    { gpa: MMIO_HOLE_END, size: memBytes - MMIO_HOLE_START, offset: MMIO_HOLE_START },
  ];
}
