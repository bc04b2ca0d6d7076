// Gate for tests that need /dev/kvm and the built guests. Outside CI a missing /dev/kvm skips with
// the reason shown; under CI=true it is a failure, never a skip.
import { accessSync, constants, existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const cli = path.join(root, 'dist', 'cli', 'nodevisor.cjs');
export const guest = (name) => path.join(root, 'guests', 'tests', 'build', name);

function kvmProblem() {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch (e) {
    return `/dev/kvm not usable: ${e.code}`;
  }
  if (!existsSync(guest('hello.bin'))) return 'test guests not built (npm run guests)';
  return undefined;
}

const problem = kvmProblem();
if (problem && process.env.CI) throw new Error(`${problem}: required under CI=true`);

/** node:test options that skip (with the reason) when KVM or the guests are missing. */
export const needsKvm = { skip: problem ?? false };

/**
 * Whether this KVM is nested SVM that QEMU emulates in software (TCG): CI's fallback on a machine
 * without KVM (scripts/nested-kvm.sh sets the variable). That emulated CPU sometimes loses state on
 * its own: its VM's kernel was seen dying of recursive page faults in its exc_page_fault, its GS base
 * gone, under a nodevisor test; and in two CI runs of five a guest that had run fine for seconds
 * (the small kernel after printing its boot log, the C guest mid-output) triple-faulted, which some
 * 20 reruns of those tests there did not reproduce. SVM leaves no trace of where: after a shutdown
 * the vCPU's registers are its reset state.
 */
const emulatedSvm = process.env.NODEVISOR_EMULATED_SVM === '1';

/** A run that ended in a triple fault the test did not ask for, under emulated SVM. */
function emulatorShutdown(r) {
  return emulatedSvm && r.status === 6 && /vcpu\d+: triple fault \(KVM_EXIT_SHUTDOWN\)/.test(r.stderr);
}

/**
 * Runs `runOnce` (which resolves with { status, stderr, ... }), and once more if it ended in a triple
 * fault under emulated SVM, saying so in the test output. A second triple fault is the result: a
 * fault of ours that happens every time still fails its test. On any other KVM there is no rerun.
 */
export async function rerunOnEmulatorShutdown(what, runOnce) {
  const r = await runOnce();
  if (!emulatorShutdown(r)) return r;
  console.log(`# ${what}: the guest triple-faulted on emulated nested SVM (NODEVISOR_EMULATED_SVM); running it once more. ${r.stderr.trim().split('\n').at(-1)}`);
  return runOnce();
}

/**
 * Runs the CLI; resolves with { status, stdout, stderr, ms }. Kills it after `killAfterMs`. A guest
 * that triple-faults on emulated SVM is run once more (rerunOnEmulatorShutdown) unless
 * `tripleFaultExpected`.
 */
export function runCli(args, { tripleFaultExpected = false, ...opts } = {}) {
  const once = () => runCliOnce(args, opts);
  return tripleFaultExpected ? once() : rerunOnEmulatorShutdown(`nodevisor ${args.join(' ')}`, once);
}

function runCliOnce(args, { killAfterMs = 60_000, env = {}, input, uid, cwd } = {}) {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(process.execPath, [cli, ...args], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(cwd !== undefined ? { cwd } : {}),
      ...(uid !== undefined ? { uid, gid: uid } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, ms: performance.now() - started });
    });
  });
}
