/** Generated at build time by scripts/build-validators.mjs from machineConfigSchema (ajv standalone code). */
import type { PrecompiledValidator } from '../precompiled-validator.js';

declare const validate: PrecompiledValidator;
export default validate;
