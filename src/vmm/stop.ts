/** How a VM ended, and the process exit status each way maps to (listed in README). */

/** Where a vCPU was when its thread left the guest: reported with a timeout. */
export interface VcpuStopState {
  readonly vcpu: number;
  /** RIP, in hex. */
  readonly rip: string;
  /** KVM's MP state: 'halted' (waiting for an interrupt), 'running', or the state's name. */
  readonly state: string;
  /** Exits this vCPU answered. */
  readonly exits: number;
}

export type StopReason =
  | { kind: 'poweroff' }
  | { kind: 'reboot' }
  | { kind: 'debug-exit'; value: number; status: number }
  | { kind: 'triple-fault'; message: string }
  | { kind: 'emulation-failure'; message: string }
  | { kind: 'kvm-failure'; message: string }
  /** `vcpus`: where each vCPU was when the time ran out (running in the guest, or halted, and its RIP). */
  | { kind: 'timeout'; seconds: number; vcpus?: readonly VcpuStopState[] }
  | { kind: 'stopped' }
  | { kind: 'killed' }
  | { kind: 'expect-matched'; line: string }
  | { kind: 'expect-failed'; pattern: string }
  | { kind: 'error'; message: string };

/** Process exit statuses. isa-debug-exit statuses are always odd, so every other status is even. */
export const EXIT_STATUS = {
  poweroff: 0,
  stopped: 0,
  usage: 2,
  reboot: 4,
  'triple-fault': 6,
  'emulation-failure': 8,
  'kvm-failure': 10,
  killed: 12,
  'expect-matched': 0,
  'expect-failed': 14,
  error: 70,
  timeout: 124,
} as const;

export function exitStatus(r: StopReason): number {
  return r.kind === 'debug-exit' ? r.status : EXIT_STATUS[r.kind];
}

export function describeStop(r: StopReason): string {
  switch (r.kind) {
    case 'poweroff': return 'guest powered off';
    case 'reboot': return 'guest requested a reboot';
    case 'debug-exit': return `guest exited through isa-debug-exit with value ${r.value} (status ${r.status})`;
    case 'triple-fault': return r.message;
    case 'emulation-failure': return r.message;
    case 'kvm-failure': return r.message;
    case 'timeout': return `timed out after ${r.seconds} s${r.vcpus?.length ? ` (${r.vcpus.map(describeVcpu).join('; ')})` : ''}`;
    case 'stopped': return 'stopped';
    case 'killed': return 'killed';
    case 'expect-matched': return `--expect matched: ${r.line}`;
    case 'expect-failed': return `the guest stopped before a console line matched --expect ${r.pattern}`;
    case 'error': return r.message;
  }
}

function describeVcpu(v: VcpuStopState): string {
  return `vcpu${v.vcpu} ${v.state} at RIP ${v.rip} after ${v.exits} exits`;
}
