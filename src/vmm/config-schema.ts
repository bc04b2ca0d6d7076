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
    timeoutSec: { type: 'number', exclusiveMinimum: 0 },
    consoleFd: { type: 'integer', minimum: 0 },
    consoleInput: { type: 'object' },
    logLevel: { enum: [...LOG_LEVELS] },
    hugepages: { enum: [0, 1, 2] },
  },
} as const;
