#!/usr/bin/env node
/** The nodevisor command line: thin yargs commands over the library; errors become one line on stderr. */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { runCommand } from './commands/run.js';
import { doctorCommand } from './commands/doctor.js';
import { serveCommand } from './commands/serve.js';
import { describeError, VmmError } from '../errors.js';
import { EXIT_STATUS } from '../vmm/stop.js';

export async function main(args: string[]): Promise<void> {
  try {
    await yargs(args)
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
      .version()
      .parseAsync();
  } catch (e) {
    process.stderr.write(`nodevisor: ${describeError(e)}\n`);
    if (process.env.NODEVISOR_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    process.exitCode = e instanceof VmmError && (e.code === 'BAD_CONFIG' || e.code === 'BAD_KERNEL') ? EXIT_STATUS.usage : 1;
  }
}

await main(hideBin(process.argv));
