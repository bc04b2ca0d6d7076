/**
 * The type of a validator that scripts/build-validators.mjs compiles ahead of time (ajv standalone
 * code): called on data, it returns whether the data is valid and leaves ajv's errors on itself.
 */
import type { ErrorObject } from 'ajv';

export type PrecompiledValidator = ((data: unknown) => boolean) & { errors?: ErrorObject[] | null };
