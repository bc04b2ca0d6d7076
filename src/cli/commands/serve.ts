/** `nodevisor serve --api-sock PATH`: a Firecracker-compatible REST API on a unix socket. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../../package-root.js';
import type { Argv, CommandModule } from 'yargs';
import { createLogger, LOG_LEVELS, type LogLevel } from '../../log.js';
import { describeStop, exitStatus } from '../../vmm/stop.js';

interface ServeArgs {
  'api-sock': string;
  id: string;
  'log-level': LogLevel;
}

const version = (): string => {
  try {
    return (JSON.parse(readFileSync(path.join(packageRoot(import.meta.url), 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
};

export const serveCommand: CommandModule<object, ServeArgs> = {
  command: 'serve',
  describe: 'Serve the Firecracker API on a unix socket; exits when the guest stops',
  builder: (y: Argv) =>
    y
      .option('api-sock', { type: 'string', demandOption: true, describe: 'path of the unix socket to create' })
      .option('id', { type: 'string', default: 'anonymous-instance', describe: 'instance id reported by GET /' })
      .option('log-level', { choices: LOG_LEVELS, default: 'warn' as LogLevel }) as Argv<ServeArgs>,
  handler: async (argv) => {
    // Loaded here, not at start-up: fastify alone costs ~100 ms that `run` must not pay.
    const { ApiServer } = await import('../../api/server.js');
    const log = createLogger(argv['log-level']);
    const server = new ApiServer({ id: argv.id, version: version(), log, machineDefaults: { logLevel: argv['log-level'] } });
    await server.listen(argv['api-sock']);
    const shutdown = () => void server.close().then(() => process.exit(130));
    process.once('SIGINT', shutdown);
    process.once('SIGTERM', shutdown);
    const reason = await server.stopped;
    await server.close();
    process.off('SIGINT', shutdown);
    process.off('SIGTERM', shutdown);
    const status = exitStatus(reason);
    if (status !== 0 && reason.kind !== 'debug-exit') process.stderr.write(`nodevisor: ${describeStop(reason)}\n`);
    process.exitCode = status;
  },
};
