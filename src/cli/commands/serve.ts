/**
 * `nodevisor serve --api-sock PATH`: a Firecracker-compatible REST API on a unix socket. With
 * `--config-file FILE` (Firecracker's option) the microVM is configured from that file and started at
 * once; `--no-api` then serves no socket at all.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type { Argv, CommandModule } from 'yargs';
import { createLogger, LOG_LEVELS, type LogLevel } from '../../log.js';
import { packageVersion } from '../../package-root.js';
import { describeError, VmmError } from '../../errors.js';
import { describeStop, exitStatus } from '../../vmm/stop.js';
import { duplicateKey } from '../../api/duplicate-keys.js';

interface ServeArgs {
  'api-sock'?: string;
  'config-file'?: string;
  api: boolean;
  id: string;
  'log-level': LogLevel;
}

export const serveCommand: CommandModule<object, ServeArgs> = {
  command: 'serve',
  describe: 'Serve the Firecracker API on a unix socket; exits when the guest stops',
  builder: (y: Argv) =>
    y
      .option('api-sock', { requiresArg: true, type: 'string', describe: 'path of the unix socket to create' })
      .option('config-file', { requiresArg: true, type: 'string', describe: 'a Firecracker configuration file (JSON): configure the microVM from it and start it' })
      // yargs reads --no-api as api=false.
      .option('api', { type: 'boolean', default: true, describe: 'serve the API (--no-api: serve none; needs --config-file)' })
      .option('id', { requiresArg: true, type: 'string', default: 'anonymous-instance', describe: 'instance id reported by GET /' })
      .option('log-level', { requiresArg: true, choices: LOG_LEVELS, default: 'warn' as LogLevel }) as Argv<ServeArgs>,
  handler: async (argv) => {
    const socket = argv['api-sock'];
    const configFile = argv['config-file'];
    if (!argv.api && configFile === undefined) throw new VmmError('BAD_CONFIG', '--no-api needs --config-file (or nothing would ever start the microVM)');
    if (!argv.api && socket !== undefined) throw new VmmError('BAD_CONFIG', '--no-api and --api-sock exclude each other');
    if (!!argv.api && socket === undefined) throw new VmmError('BAD_CONFIG', 'missing --api-sock PATH (or --no-api with --config-file)');
    // Firecracker's rule for an instance id; GET / reports it, and scripts may put it in paths.
    if (!/^[A-Za-z0-9-]{1,64}$/.test(argv.id)) throw new VmmError('BAD_CONFIG', `--id ${JSON.stringify(argv.id)}: 1 to 64 letters, digits and hyphens`);
    const config = configFile === undefined ? undefined : readConfigFile(configFile);
    // Loaded here, not at start-up: fastify alone costs ~100 ms that `run` must not pay.
    const { ApiServer } = await import('../../api/server.js');
    const log = createLogger(argv['log-level']);
    const server = new ApiServer({ id: argv.id, version: packageVersion(import.meta.url), log, machineDefaults: { logLevel: argv['log-level'] } });
    // The socket first: a bad --api-sock is refused before any VM runs.
    if (socket !== undefined) await server.listen(socket);
    if (config !== undefined) {
      try {
        await server.bootFrom(config);
      } catch (e) {
        await server.close();
        throw new VmmError(e instanceof VmmError ? e.code : 'BAD_CONFIG', `--config-file ${configFile}: ${describeError(e)}`);
      }
    }
    // A signal ends the VM and removes the socket; the status is 128 + the signal's number.
    const signals = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;
    const handlers = Object.entries(signals).map(([signal, n]) => {
      const handler = () => void server.close().then(() => process.exit(128 + n));
      process.once(signal, handler);
      return [signal, handler] as const;
    });
    const reason = await server.stopped;
    await server.close();
    for (const [signal, handler] of handlers) process.off(signal, handler);
    const status = exitStatus(reason);
    if (status !== 0 && reason.kind !== 'debug-exit') process.stderr.write(`nodevisor: ${describeStop(reason)}\n`);
    process.exitCode = status;
  },
};

/** A configuration is a few hundred bytes; more than this is not one (/dev/zero, a disk image). */
const CONFIG_FILE_MAX = 1 << 20;

function readConfigFile(file: string): unknown {
  let text: string;
  try {
    const fd = openSync(file, 'r');
    try {
      if (!fstatSync(fd).isFile()) throw new VmmError('BAD_CONFIG', `--config-file ${file}: not a regular file`);
      const buf = Buffer.alloc(CONFIG_FILE_MAX + 1);
      let n = 0;
      for (let got; n < buf.length && (got = readSync(fd, buf, n, buf.length - n, null)) > 0; ) n += got;
      if (n > CONFIG_FILE_MAX) throw new VmmError('BAD_CONFIG', `--config-file ${file}: larger than ${CONFIG_FILE_MAX} bytes: not a configuration`);
      text = buf.toString('utf8', 0, n);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if (e instanceof VmmError) throw e;
    throw new VmmError('BAD_CONFIG', `--config-file ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : describeError(e)}`);
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (e) {
    throw new VmmError('BAD_CONFIG', `--config-file ${file}: not valid JSON (${(e as Error).message})`);
  }
  // JSON.parse keeps a key's last value: a second "boot-source" would boot its kernel without a word.
  const twice = duplicateKey(text);
  if (twice !== undefined) throw new VmmError('BAD_CONFIG', `--config-file ${file}: ${twice} is given twice`);
  return config;
}
