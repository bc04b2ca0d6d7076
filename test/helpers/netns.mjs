// Throwaway network namespaces with a tap for tests that put a VM on a network: everything runs
// inside a namespace of the test's own (nothing touches the host's interfaces), and the namespace,
// with its tap, is deleted whatever happens.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/** Why namespaces cannot be used here, or undefined when they can. */
export function netnsProblem() {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces and taps need CAP_SYS_ADMIN and CAP_NET_ADMIN)';
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun is missing';
  if (spawnSync('ip', ['-V']).status !== 0) return '`ip` (iproute2) is not installed';
  return undefined;
}

const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/**
 * Runs fn(ns) with a fresh namespace holding tap `tap` (created persistent, so the VMM attaches to
 * it), at hostAddr (e.g. '10.0.2.1/24'), up. Deletes the namespace afterwards.
 */
export async function withNetns(name, tap, hostAddr, fn) {
  const ns = `${name}-${process.pid}`;
  ip('netns', 'add', ns);
  try {
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
    ip('netns', 'exec', ns, 'ip', 'tuntap', 'add', tap, 'mode', 'tap');
    ip('netns', 'exec', ns, 'ip', 'addr', 'add', hostAddr, 'dev', tap);
    ip('netns', 'exec', ns, 'ip', 'link', 'set', tap, 'up');
    return await fn(ns);
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

/** A counter of /sys/class/net/TAP/statistics inside the namespace. */
export function tapCounter(ns, tap, counter) {
  return Number(ip('netns', 'exec', ns, 'cat', `/sys/class/net/${tap}/statistics/${counter}`).trim());
}

/** Runs a command inside the namespace; resolves { status, stdout, stderr }. Killed after `ms`. */
export function runInNetns(ns, cmd, args, ms = 60_000) {
  return new Promise((resolve) => {
    const p = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), ms);
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/**
 * How to send one ping from the namespace: iputils' ping, else python3 running `pythonScript` (a
 * raw-socket echo, guests/tests/qemu-ping.py); undefined when neither exists. Returns addr => [cmd, args].
 */
export function hostPinger(pythonScript) {
  if (spawnSync('ping', ['-V']).status === 0) return (addr) => ['ping', ['-c', '1', '-W', '3', addr]];
  if (spawnSync('python3', ['-V']).status === 0) return (addr) => ['python3', [pythonScript, addr]];
  return undefined;
}
