// A thread that increments word 1 of a SharedState `rounds` times, each a plain load, a pause and a
// plain store under the lock: without mutual exclusion, increments from other threads get lost.
import { workerData, parentPort } from 'node:worker_threads';
import { hammer } from './shared-state-hammer.mjs';

hammer(workerData.buffer, workerData.rounds, workerData.useLock);
parentPort.postMessage('done');
