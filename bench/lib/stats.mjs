// Small helpers shared by the benchmarks: medians and timed child processes that watch their output.
import { spawn } from 'node:child_process';

export const median = (xs) => {
  const s = [...xs].filter((x) => x !== undefined).sort((a, b) => a - b);
  if (s.length === 0) return undefined;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * The ratio a[i] / b[i] of each pair of runs taken side by side (the benchmarks alternate the two
 * VMMs), as "lo-hi": under nested emulation one run can be off by a third, so the median ratio is
 * printed with the spread of the pairs behind it.
 */
export const pairSpread = (a, b, digits = 2) => {
  const r = a.map((x, i) => (x !== undefined && b[i] ? x / b[i] : undefined)).filter((x) => x !== undefined).sort((x, y) => x - y);
  return r.length ? `${r[0].toFixed(digits)}-${r.at(-1).toFixed(digits)}` : 'n/a';
};

/**
 * Runs `cmd args`, timestamping each line of stdout (ms since spawn). Resolves when the process
 * exits, or kills it when its output has been quiet for `quietMs` after `settleOn` matched (QEMU
 * pauses rather than exits on an emulation failure), or at `limitMs`.
 */
export function timedRun(cmd, args, { limitMs = 120_000, quietMs = 3000, settleOn } = {}) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines = [];
    let buf = '';
    let stderr = '';
    let settled = false;
    let quiet;
    const arm = () => {
      clearTimeout(quiet);
      if (settled) quiet = setTimeout(() => child.kill('SIGKILL'), quietMs);
    };
    child.stdout.on('data', (d) => {
      buf += d.toString('latin1');
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, i).replace(/\r$/, '');
        buf = buf.slice(i + 1);
        lines.push({ ms: performance.now() - t0, text });
        if (settleOn && settleOn.test(text)) settled = true;
      }
      arm();
    });
    child.stderr.on('data', (d) => (stderr += d));
    const limit = setTimeout(() => child.kill('SIGKILL'), limitMs);
    child.on('close', (status, signal) => {
      clearTimeout(limit);
      clearTimeout(quiet);
      if (buf) lines.push({ ms: performance.now() - t0, text: buf });
      resolve({ status, signal, lines, stderr, ms: performance.now() - t0 });
    });
  });
}
