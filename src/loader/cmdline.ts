/** The kernel command line: validated and written NUL-terminated into guest memory. */
import { VmmError } from '../errors.js';
import type { GuestMemory } from '../memory/guest-memory.js';

export function writeCmdline(mem: GuestMemory, addr: number, cmdline: string, max: number): number {
  const bytes = Buffer.from(cmdline, 'utf8');
  if (bytes.includes(0)) throw new VmmError('BAD_CONFIG', '--cmdline: contains a NUL byte');
  if (bytes.length + 1 > max) throw new VmmError('BAD_CONFIG', `--cmdline: ${bytes.length} bytes, longer than the kernel accepts (${max - 1})`);
  mem.write(addr, bytes);
  mem.writeU8(addr + bytes.length, 0);
  return bytes.length + 1;
}
