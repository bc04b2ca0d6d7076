/**
 * Node built-ins that only some runs need, loaded on first use instead of at start-up: imported
 * statically, node:crypto cost ~6 ms, node:child_process ~4 ms and node:net ~2.5 ms of every
 * `nodevisor run` on the 2-core dev machine, for a virtio-rng request, a guest-kit build or a
 * console stream that most runs never need.
 */
import { createRequire } from 'node:module';

const load = createRequire(import.meta.url);

export const lazyCrypto = (): typeof import('node:crypto') => load('node:crypto');
export const lazyChildProcess = (): typeof import('node:child_process') => load('node:child_process');
/** For a machine whose console is a stream (the library without consoleFd); the CLI gives an fd. */
export const lazyNet = (): typeof import('node:net') => load('node:net');
