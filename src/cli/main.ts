/** The nodevisor command line: thin yargs commands over the library; errors become one line on stderr. */
import yargs from 'yargs';
import { runCommand } from './commands/run.js';
import { doctorCommand } from './commands/doctor.js';
import { serveCommand } from './commands/serve.js';
import { describeError, VmmError } from '../errors.js';
import { EXIT_STATUS } from '../vmm/stop.js';
import { packageVersion } from '../package-root.js';

export async function main(args: string[]): Promise<void> {
  try {
    const y = yargs(args);
    skipHelpRendering(y);
    await y
      .scriptName('nodevisor')
      .parserConfiguration({ 'populate--': true })
      .command(runCommand)
      .command(doctorCommand)
      .command(serveCommand)
      .demandCommand(1, 'name a command: run, serve or doctor')
      .strict()
      .recommendCommands()
      .fail((msg, err) => {
        throw err ?? new VmmError('BAD_CONFIG', msg);
      })
      .help()
      // Given, rather than left to yargs, which lists folders upwards from the main script to find
      // a package.json (3-4 ms of every start on the dev machine).
      .version(packageVersion(import.meta.url))
      .parseAsync();
  } catch (e) {
    process.stderr.write(`nodevisor: ${describeError(e)}\n`);
    if (process.env.NODEVISOR_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    process.exitCode = e instanceof VmmError && (e.code === 'BAD_CONFIG' || e.code === 'BAD_KERNEL') ? EXIT_STATUS.usage : 1;
  }
}

/**
 * yargs renders the whole help text of a command right after calling its handler, to have it ready
 * should the handler fail; our .fail() never shows help, and with a guest already running that
 * rendering is on its console's way (3-16 ms of `run` on the dev machine, a fifth of its start-up
 * under nested emulation). yargs has no option for it: its usage object is patched, when yargs still
 * has the shape this was written against.
 */
function skipHelpRendering(y: unknown): void {
  const usage = (y as { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: unknown } } }).getInternalMethods?.().getUsageInstance?.();
  if (usage && typeof usage.cacheHelpMessage === 'function') usage.cacheHelpMessage = () => {};
}
