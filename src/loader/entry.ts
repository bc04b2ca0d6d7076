/** The CPU state a loader asks the boot vCPU to start in. */
export type EntryState =
  /** 16-bit real mode at segment:ip, every segment register = segment. */
  | { mode: 'real'; segment: number; ip: number; sp: number };
