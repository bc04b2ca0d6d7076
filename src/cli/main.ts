/** The nodevisor command line: thin yargs commands over the library; errors become one line on stderr. */
import yargs, { type MiddlewareFunction } from 'yargs';
import { runCommand } from './commands/run.js';
import { doctorCommand } from './commands/doctor.js';
import { serveCommand } from './commands/serve.js';
import { describeError, VmmError } from '../errors.js';
import { EXIT_STATUS } from '../vmm/stop.js';
import { packageVersion } from '../package-root.js';
import { Kvm } from '../kvm/kvm.js';
import { VM_SETUP } from '../vmm/machine.js';

export { guestRan } from './guest-ran.js';

/** Our version, put in by scripts/bundle.mjs; undefined in tsc's tree, which reads package.json. */
declare const __NODEVISOR_VERSION__: string | undefined;

export async function main(args: string[]): Promise<void> {
  // `run` will want a VM: KVM makes it on another core while yargs parses the command line (a
  // failure here is left for Machine.create to report, with the flags checked first).
  if (args[0] === 'run') {
    if (args.indexOf('--') === args.length - 1) {
      process.stderr.write('nodevisor: -- is not followed by a command (run ... -- COMMAND ARGS...)\n');
      process.exitCode = EXIT_STATUS.usage;
      return;
    }
    try {
      Kvm.shared().prepareVm(VM_SETUP);
    } catch {
      // no KVM: said later, in context
    }
  }
  try {
    const y = yargs(args);
    skipHelpRendering(y);
    await y
      .scriptName('nodevisor')
      // A COMMAND's arguments stay as typed ('007', '1e3'), not numbers.
      // One spelling per flag, as documented (--log-level, not also --logLevel): without camelCase
      // aliases and dotted keys, yargs-parser sets each flag once rather than under each spelling,
      // in both of its parses (1-2 ms of `run` on the dev machine: 100 paired runs).
      .parserConfiguration({ 'populate--': true, 'parse-positional-numbers': false, 'camel-case-expansion': false, 'dot-notation': false })
      // (yargs passes middleware its instance too, which its types leave out.)
      .middleware(refuseRepeatedFlags as unknown as MiddlewareFunction)
      .middleware(((_argv: unknown, y: SwitchOptions) => refuseMisusedSwitches(args, y)) as unknown as MiddlewareFunction)
      .command(runCommand)
      .command(doctorCommand)
      .command(serveCommand)
      .demandCommand(1, 'name a command: run, serve or doctor')
      .strict()
      .recommendCommands()
      .fail((msg, err) => {
        // yargs' own parse errors (YError) are bad input like the rest: one line, status 2.
        if (err && err.name !== 'YError') throw err;
        throw new VmmError('BAD_CONFIG', oneLine(msg ?? err?.message ?? 'bad arguments', args));
      })
      .help()
      // Given, rather than left to yargs, which lists folders upwards from the main script to find
      // a package.json (3-4 ms of every start on the dev machine).
      .version(typeof __NODEVISOR_VERSION__ === 'string' ? __NODEVISOR_VERSION__ : packageVersion(import.meta.url))
      .parseAsync();
  } catch (e) {
    process.stderr.write(`nodevisor: ${visibleControls(describeError(e))}\n`);
    if (process.env.NODEVISOR_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    process.exitCode = e instanceof VmmError && (e.code === 'BAD_CONFIG' || e.code === 'BAD_KERNEL') ? EXIT_STATUS.usage : 1;
  }
}

/**
 * A flag that takes one value, given twice: yargs would make an array of the values, which the
 * command then misreads (`--share-cwd ro --share-cwd rw`). Flags declared repeatable are arrays.
 */
function refuseRepeatedFlags(argv: Record<string, unknown>, y: { getOptions(): { array: string[] } }): void {
  const repeatable = new Set(y.getOptions().array);
  for (const [key, value] of Object.entries(argv)) {
    if (key === '_' || key === '--') continue; // positionals
    if (Array.isArray(value) && !repeatable.has(key)) throw new VmmError('BAD_CONFIG', `--${key} given more than once (it takes one value)`);
  }
}

type SwitchOptions = { getOptions(): { boolean: string[]; key: Record<string, unknown> } };

/**
 * `--json=maybe`: yargs reads any value but "true" as false, so a typo would silently turn a switch
 * off. A switch given with `=` takes only true or false. And yargs reads `--no-X` as X=false for
 * every flag, not only switches: `--no-disk` reached the command as a disk of `false`, `--no-expect`
 * as the pattern /false/. Only a switch can be negated.
 */
function refuseMisusedSwitches(args: readonly string[], y: SwitchOptions): void {
  const { boolean, key } = y.getOptions();
  const switches = new Set(boolean);
  for (const arg of args) {
    if (arg === '--') break; // the guest command's own arguments
    const m = /^--(?:no-)?([^=]+)=(.*)$/s.exec(arg);
    if (m && switches.has(m[1]!) && m[2] !== 'true' && m[2] !== 'false') throw new VmmError('BAD_CONFIG', `${arg}: --${m[1]} is a switch: give it alone, or =true or =false`);
    const negated = /^--no-([^=]+)/s.exec(arg)?.[1];
    if (negated !== undefined && !switches.has(negated) && Object.hasOwn(key, negated)) throw new VmmError('BAD_CONFIG', `${arg}: --${negated} takes a value; only on/off switches have a --no- form`);
  }
}

/**
 * An error is one line, whatever the values it quotes: a file name or pattern with a newline in it
 * (or a config file's text, quoted by JSON.parse) is shown with its control characters escaped.
 */
function visibleControls(message: string): string {
  return message.replace(/[\x00-\x1f\x7f]/g, (c) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : c === '\t' ? '\\t' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));
}

/** yargs' own messages as one line. */
function oneLine(msg: string, args: readonly string[]): string {
  const missing = /^Not enough arguments following: (\S+)$/.exec(msg);
  if (missing) {
    // yargs takes a value that starts with "-" for a flag (`--cmdline -quiet`): say how to give it.
    const at = args.indexOf(`--${missing[1]}`);
    const next = at >= 0 ? args[at + 1] : undefined;
    const shown = next !== undefined && /\s/.test(next) ? JSON.stringify(next) : next;
    const hint = next !== undefined && /^-[^-]/.test(next) ? ` (a value that starts with "-" is given as --${missing[1]}=${shown})` : '';
    return `--${missing[1]}: needs a value${hint}`;
  }
  // recommendCommands() says only this for a near miss: name what was typed too.
  const guess = /^Did you mean (\S+)\?$/.exec(msg);
  if (guess) return `unknown command ${JSON.stringify(args[0])}: did you mean ${guess[1]}?`;
  const choice = /^Invalid values:\s*Argument: (\S+), Given: (.*), Choices: (.*)$/s.exec(msg);
  if (choice) return `--${choice[1]} ${choice[2]}: expected one of ${choice[3]!.trim()}`;
  return msg.replace(/\s*\n\s*/g, '; ');
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
