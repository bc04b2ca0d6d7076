/**
 * The command line's first module (bundled to dist/cli/cli-bundle.cjs, which nodevisor.cts loads). For
 * `run`, a vCPU thread starts booting its own Node environment before anything else is evaluated:
 * the two overlap, on two cores, instead of adding up (vmm/vcpu-threads.ts). The rest of the
 * command line is evaluated after that.
 */
import { prespawnVcpuThread } from '../vmm/vcpu-threads.js';

// yargs' hideBin() would pull yargs-parser in before the thread starts; for plain `node` it is this.
const args = process.argv.slice(2);
if (args[0] === 'run') prespawnVcpuThread();
void import('./main.js').then(({ main }) => main(args));
