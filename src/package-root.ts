/**
 * The package's root folder (where package.json, native/ and guests/ are). Found by walking up from
 * the running file rather than by a fixed number of `..`, because the same code runs both from
 * tsc's output tree (dist/vmm/x.js, dist/cli/commands/y.js) and from the esbuild bundles
 * (dist/cli/cli-bundle.cjs, dist/vmm/vcpu-thread.cjs), at different depths.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export function packageRoot(fromUrl: string): string {
  const start = path.dirname(fileURLToPath(fromUrl));
  let root = rootOf.get(start);
  if (root) return root;
  let dir = start;
  for (;;) {
    if (existsSync(path.join(dir, 'package.json'))) break;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`nodevisor: no package.json above ${fileURLToPath(fromUrl)}`);
    dir = up;
  }
  root = dir;
  rootOf.set(start, root);
  return root;
}

/** Each folder's walk is done once per process: the addon, the demo guest and the version all ask. */
const rootOf = new Map<string, string>();

/** Our version, from our package.json ('unknown' if it cannot be read). */
export function packageVersion(fromUrl: string): string {
  try {
    return (JSON.parse(readFileSync(path.join(packageRoot(fromUrl), 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
