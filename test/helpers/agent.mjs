// Builds nv-agent (the guest kit's command runner) for the host, so that the runner protocol is
// tested against the real agent over a real socket, without a VM.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { root } from './kvm.mjs';

export const agentSource = path.join(root, 'guests', 'kit', 'agent', 'nv-agent.c');

export function buildAgent() {
  const dir = path.join(root, 'guests', 'tests', 'build');
  mkdirSync(dir, { recursive: true });
  const out = path.join(dir, 'nv-agent-host');
  if (!existsSync(out) || statSync(out).mtimeMs < statSync(agentSource).mtimeMs) {
    execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', out, agentSource]);
  }
  return out;
}
