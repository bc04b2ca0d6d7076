/**
 * The schema of MachineConfig, checked by ajv when a machine is created, so that a library caller's
 * mistake is one clear error naming the field ("machine config: cpus must be <= 254") instead of a
 * failure deep inside KVM set-up.
 */
import { Ajv } from 'ajv';
import { VmmError } from '../errors.js';
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
    timeoutSec: { type: 'number', exclusiveMinimum: 0 },
    consoleFd: { type: 'integer', minimum: 0 },
    consoleInput: { type: 'object' },
    logLevel: { enum: [...LOG_LEVELS] },
    hugepages: { enum: [0, 1, 2] },
  },
} as const;

const ajv = new Ajv({ allErrors: false, strict: true });
const validate = ajv.compile(machineConfigSchema);

/** Throws VmmError('BAD_CONFIG') naming the first bad field. */
export function checkMachineConfig(config: unknown): void {
  if (validate(config)) return;
  const e = validate.errors![0]!;
  const field = e.instancePath.replace(/^\//, '').replace(/\//g, '.');
  const what = e.keyword === 'additionalProperties' ? `unknown field ${String((e.params as { additionalProperty?: string }).additionalProperty)}` : `${field || 'config'} ${e.message ?? 'is invalid'}`;
  throw new VmmError('BAD_CONFIG', `machine config: ${what}`);
}
