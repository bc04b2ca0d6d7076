/** Checks a MachineConfig against machineConfigSchema (config-schema.ts). */
import { VmmError } from '../errors.js';
// The standalone validator `npm run build` generates from machineConfigSchema
// (scripts/build-validators.mjs): validating costs no ajv compiler at start-up.
import validate from './config-validator.js';

/** Throws VmmError('BAD_CONFIG') naming the first bad field. */
export function checkMachineConfig(config: unknown): void {
  if (validate(config)) return;
  const e = validate.errors![0]!;
  const field = e.instancePath.replace(/^\//, '').replace(/\//g, '.');
  const what = e.keyword === 'additionalProperties' ? `unknown field ${String((e.params as { additionalProperty?: string }).additionalProperty)}` : `${field || 'config'} ${e.message ?? 'is invalid'}`;
  throw new VmmError('BAD_CONFIG', `machine config: ${what}`);
}
