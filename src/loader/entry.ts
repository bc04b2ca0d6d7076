/** The CPU state a loader asks the boot vCPU to start in. */
export type EntryState =
  /** 16-bit real mode at segment:ip, every segment register = segment (flat images). */
  | { mode: 'real'; segment: number; ip: number; sp: number }
  /** 32-bit protected mode, paging off, flat segments, EBX = `ebx` (PVH: hvm_start_info). */
  | { mode: 'protected32'; entry: number; ebx: number }
  /** 64-bit long mode on identity-mapped page tables, RSI = `rsi` (Linux 64-bit boot protocol: boot_params). */
  | { mode: 'long64'; entry: number; rsi: number };
