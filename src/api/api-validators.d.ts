/**
 * Generated at build time by scripts/build-validators.mjs (ajv standalone code): for each
 * `...Schema` export of schemas.ts, a validator of the same name; the default export has them all.
 */
import type { PrecompiledValidator } from '../precompiled-validator.js';

declare const validators: { readonly [schemaName: string]: PrecompiledValidator | undefined };
export default validators;
