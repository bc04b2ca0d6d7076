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

/** Runs the CLI; resolves with { status, stdout, stderr, ms }. Kills it after `killAfterMs`. */
export function runCli(args, { killAfterMs = 60_000, env = {}, input, uid, cwd } = {}) {
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
