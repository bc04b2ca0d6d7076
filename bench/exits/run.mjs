#!/usr/bin/env node
// bench/exits: nanoseconds per PIO exit and per MMIO exit under nodevisor and under a C reference
// VMM (reference.c) running the same guest image, in one run, printing `ratio nodevisor/C`.
//
// Method: each guest (guests/tests/exits-{pio,mmio}.bin) loops N times on one exiting access; N is
// patched into the image. Every configuration runs at two N and the per-exit cost is the slope,
// (t(N2) - t(N1)) / (N2 - N1), so process start-up, Node's boot and the guest's own set-up cancel
// out and only the exit path is measured. Runs alternate between the two VMMs; medians are reported.
//
// Usage: node bench/exits/run.mjs [--runs 5] [--n1 20000] [--n2 100000] [--json]
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const { values: opt } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    n1: { type: 'string', default: '20000' },
    n2: { type: 'string', default: '100000' },
    json: { type: 'boolean', default: false },
  },
});
const RUNS = Number(opt.runs);
const N1 = Number(opt.n1);
const N2 = Number(opt.n2);
const COUNT_OFFSET = 8; // where the guests keep their loop count (guests/tests/README.md)

// Build the reference and the guests.
const buildDir = path.join(here, 'build');
mkdirSync(buildDir, { recursive: true });
const reference = path.join(buildDir, 'reference');
execFileSync('cc', ['-O2', '-Wall', '-o', reference, path.join(here, 'reference.c')], { stdio: 'inherit' });
execFileSync('make', ['-s', '-C', path.join(root, 'guests', 'tests')], { stdio: 'inherit' });

const work = mkdtempSync(path.join(tmpdir(), 'nv-bench-exits-'));
function patched(kind, n) {
  const img = Buffer.from(readFileSync(path.join(root, 'guests', 'tests', 'build', `exits-${kind}.bin`)));
  img.writeUInt32LE(n, COUNT_OFFSET);
  const file = path.join(work, `exits-${kind}-${n}.bin`);
  writeFileSync(file, img);
  return file;
}

const vmms = {
  C: (image) => [reference, [image]],
  nodevisor: (image) => [process.execPath, [path.join(root, 'dist', 'cli', 'nodevisor.cjs'), 'run', '--kernel', image, '--testdev', '--log-level', 'error']],
};

function timeOnce(vmm, image) {
  const [cmd, args] = vmms[vmm](image);
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 1) throw new Error(`${vmm} ${path.basename(image)}: exit status ${r.status}, expected 1 (guest success): ${r.stderr}`);
  return ms;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const results = [];
try {
  for (const kind of ['pio', 'mmio']) {
    const images = { [N1]: patched(kind, N1), [N2]: patched(kind, N2) };
    const times = { C: { [N1]: [], [N2]: [] }, nodevisor: { [N1]: [], [N2]: [] } };
    timeOnce('C', images[N1]); // warm caches (page cache, CPU frequency) before measuring
    timeOnce('nodevisor', images[N1]);
    for (let i = 0; i < RUNS; i++) {
      for (const n of [N1, N2]) for (const vmm of ['C', 'nodevisor']) times[vmm][n].push(timeOnce(vmm, images[n]));
    }
    const perExit = (vmm) => ((median(times[vmm][N2]) - median(times[vmm][N1])) * 1e6) / (N2 - N1);
    const c = perExit('C');
    const nv = perExit('nodevisor');
    results.push({ kind, cNsPerExit: Math.round(c), nodevisorNsPerExit: Math.round(nv), ratio: +(nv / c).toFixed(3), runs: RUNS, n1: N1, n2: N2 });
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

if (opt.json) {
  console.log(JSON.stringify(results, null, 2));
} else {
  console.log(`bench/exits: ns per exit, slope between N=${N1} and N=${N2}, median of ${RUNS} runs each`);
  console.log('exit  C (ns)  nodevisor (ns)  ratio nodevisor/C  target');
  for (const r of results) {
    console.log(`${r.kind.padEnd(5)} ${String(r.cNsPerExit).padStart(6)}  ${String(r.nodevisorNsPerExit).padStart(14)}  ${r.ratio.toFixed(3).padStart(17)}  <= 1.10 ${r.ratio <= 1.1 ? 'met' : 'NOT MET'}`);
  }
}
