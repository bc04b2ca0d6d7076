#!/usr/bin/env node
// bench/lifecycle: (1) end to end, `nodevisor run` of a C guest that exits at once (c-exit.elf,
// through PVH) against QEMU -M microvm running the same ELF, medians of R runs each, alternated;
// (2) machines started per second: N machines created at once from one Node process (128 MiB each,
// each running c-exit.elf to completion; with startOnMainThread, and on vCPU threads) against N QEMU
// microvm processes started at once.
// Prints ratios. Targets: (1) <= 1.0x QEMU; (2) >= 20 machines/s.
//
// Usage: node bench/lifecycle/run.mjs [--runs 11] [--rounds 3] [--n 1,10,50] [--json]
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { median, pairSpread } from '../lib/stats.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values: opt } = parseArgs({ options: { runs: { type: 'string', default: '11' }, rounds: { type: 'string', default: '3' }, n: { type: 'string', default: '1,10,50' }, json: { type: 'boolean', default: false } } });
execFileSync('make', ['-s', '-C', path.join(root, 'guests', 'tests')], { stdio: 'inherit' });
const guestElf = path.join(root, 'guests', 'tests', 'build', 'c-exit.elf');
const { Machine } = await import(path.join(root, 'dist', 'index.js'));

const qemuArgs = ['-M', 'microvm', '-enable-kvm', '-cpu', 'host,-arch-capabilities', '-m', '128', '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-kernel', guestElf];
const nodevisorArgs = [path.join(root, 'dist', 'cli', 'nodevisor.cjs'), 'run', '--kernel', guestElf, '--mem', '128M', '--log-level', 'error'];

function timeProcess(cmd, args, expect = 1) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const c = spawn(cmd, args, { stdio: 'ignore' });
    c.on('error', reject);
    c.on('exit', (code) => (code === expect ? resolve(performance.now() - t0) : reject(new Error(`${cmd} exited ${code}, expected ${expect}`))));
  });
}

// (1) end to end
// `node -e 0` is timed alongside: no Node.js program starts faster, so it is the floor under
// nodevisor's figure, and what is above it is nodevisor's own.
const e2e = { nodevisor: [], qemu: [], node: [] };
await timeProcess(process.execPath, nodevisorArgs); // warm the page cache
await timeProcess('qemu-system-x86_64', qemuArgs);
for (let i = 0; i < Number(opt.runs); i++) {
  e2e.nodevisor.push(await timeProcess(process.execPath, nodevisorArgs));
  e2e.qemu.push(await timeProcess('qemu-system-x86_64', qemuArgs));
  e2e.node.push(await timeProcess(process.execPath, ['-e', '0'], 0));
}

// (2) machines per second
// With startOnMainThread (the CLI's setting, for programs that start short-lived machines): the
// guests take turns on the main thread and those that end within 50 ms never start a vCPU thread.
// Without it every machine starts a Node worker for its vCPU; both are printed.
async function machinesAtOnce(n, startOnMainThread) {
  const t0 = performance.now();
  const reasons = await Promise.all(Array.from({ length: n }, () => Machine.create({ kernel: guestElf, memBytes: 128 << 20, consoleFd: 2, startOnMainThread }).start()));
  const ms = performance.now() - t0;
  if (!reasons.every((r) => r.kind === 'debug-exit' && r.status === 1)) throw new Error(`a machine failed: ${JSON.stringify(reasons.find((r) => r.status !== 1))}`);
  return ms;
}
await machinesAtOnce(2, true); // warm up both paths
await machinesAtOnce(2, false);
const perSecond = [];
const rate = (n, ms) => +((n * 1000) / ms).toFixed(1);
// Each N is timed `--rounds` times, the three ways alternated, and the medians compared: one round
// under nested emulation can be off by half. Each round starts from a settled host: the processes,
// threads and VMs of the round before are gone (their teardown would otherwise be timed with the
// next round), and it is a new burst for nodevisor (no VM made ahead: see Kvm.createVm).
const settle = () => new Promise((r) => setTimeout(r, 1500));
for (const n of opt.n.split(',').map(Number)) {
  const times = { nv: [], threads: [], qemu: [] };
  for (let r = 0; r < Number(opt.rounds); r++) {
    await settle();
    times.nv.push(await machinesAtOnce(n, true));
    await settle();
    times.threads.push(await machinesAtOnce(n, false));
    await settle();
    const q0 = performance.now();
    await Promise.all(Array.from({ length: n }, () => timeProcess('qemu-system-x86_64', qemuArgs)));
    times.qemu.push(performance.now() - q0);
  }
  const [nvMs, threadsMs, qMs] = [median(times.nv), median(times.threads), median(times.qemu)];
  const rates = times.nv.map((ms) => rate(n, ms)).sort((a, b) => a - b);
  perSecond.push({ n, nodevisorPerSec: rate(n, nvMs), nodevisorRounds: `${rates[0]}-${rates.at(-1)}`, threadsPerSec: rate(n, threadsMs), qemuPerSec: rate(n, qMs), ratio: +(qMs / nvMs).toFixed(3), rounds: Number(opt.rounds) });
}

const result = {
  endToEnd: { nodevisorMs: Math.round(median(e2e.nodevisor)), qemuMs: Math.round(median(e2e.qemu)), ratio: +(median(e2e.nodevisor) / median(e2e.qemu)).toFixed(3), pairs: pairSpread(e2e.nodevisor, e2e.qemu), nodeFloorMs: Math.round(median(e2e.node)), runs: Number(opt.runs) },
  perSecond,
};
if (opt.json) console.log(JSON.stringify(result, null, 2));
else {
  const r = result.endToEnd;
  console.log(`bench/lifecycle: c-exit.elf (PVH), 128 MiB`);
  console.log(`end to end (median of ${r.runs}): nodevisor ${r.nodevisorMs} ms, qemu microvm ${r.qemuMs} ms, ratio nodevisor/qemu ${r.ratio} (run by run ${r.pairs}; target <= 1.0: ${r.ratio <= 1 ? 'met' : 'NOT MET'})`);
  console.log(`  of which node's own start-up (node -e 0): ${r.nodeFloorMs} ms = ${(r.nodeFloorMs / r.qemuMs).toFixed(2)}x qemu; nodevisor above it: ${r.nodevisorMs - r.nodeFloorMs} ms`);
  // Node reads and parses that whole certificate file at every start, before any of our code runs.
  if (process.env.NODE_EXTRA_CA_CERTS) console.log(`  note: NODE_EXTRA_CA_CERTS is set; it adds to every Node start (62 ms on the dev machine): unset it for figures users see`);
  for (const p of perSecond) console.log(`${String(p.n).padStart(3)} at once (median of ${p.rounds}): nodevisor ${p.nodevisorPerSec}/s (rounds ${p.nodevisorRounds}/s; one process, startOnMainThread; ${p.threadsPerSec}/s on vCPU threads), qemu ${p.qemuPerSec}/s (processes), ratio ${p.ratio} (target >= 20/s: ${p.nodevisorPerSec >= 20 ? 'met' : 'NOT MET'})`);
}
