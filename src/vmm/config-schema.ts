/**
 * The schema of MachineConfig, checked when a machine is created (config-check.ts), so that a
 * library caller's mistake is one clear error naming the field ("machine config: cpus must be <=
 * 254") instead of a failure deep inside KVM set-up.
 */
import { LOG_LEVELS } from '../log.js';

export const machineConfigSchema = {
  type: 'object',
  required: ['kernel', 'memBytes'],
  additionalProperties: false,
  properties: {
    kernel: { type: 'string', minLength: 1 },
    memBytes: { type: 'integer', minimum: 1 << 20, maximum: 2 ** 46, multipleOf: 4096 },
    cpus: { type: 'integer', minimum: 1, maximum: 254 },
    cmdline: { type: 'string' },
    initrd: { type: 'string', minLength: 1 },
    testdev: { type: 'boolean' },
    rng: { type: 'boolean' },
    console: { enum: ['serial', 'virtio'] },
    agent: { type: 'boolean' },
    disks: {
      type: 'array',
      maxItems: 16,
      items: {
        type: 'object',
        required: ['path'],
        additionalProperties: false,
        properties: { path: { type: 'string', minLength: 1 }, readOnly: { type: 'boolean' }, id: { type: 'string', minLength: 1, maxLength: 20 } },
      },
    },
    nets: {
      type: 'array',
      maxItems: 8,
      items: {
        type: 'object',
        required: ['tap'],
        additionalProperties: false,
        properties: {
          tap: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,15}$' },
          mac: { type: 'string', pattern: '^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$' },
        },
      },
    },
    shares: {
      type: 'array',
      maxItems: 8,
      items: {
        type: 'object',
        required: ['hostDir', 'tag'],
        additionalProperties: false,
        properties: { hostDir: { type: 'string', minLength: 1 }, tag: { type: 'string', minLength: 1, maxLength: 36 }, readOnly: { type: 'boolean' } },
      },
    },
    timeoutSec: { type: 'number', exclusiveMinimum: 0, maximum: 2147483 }, // Node's timers: 2^31-1 ms
    consoleFd: { type: 'integer', minimum: 0 },
    consoleInput: { type: 'object' },
    logLevel: { enum: [...LOG_LEVELS] },
    hugepages: { enum: [0, 1, 2] },
    startOnMainThread: { type: 'boolean' },
  },
} as const;
