/** Generated at build time by scripts/build-validators.mjs from machineConfigSchema (ajv standalone code). */
declare const validate: ((data: unknown) => boolean) & {
  errors?: { instancePath: string; keyword: string; message?: string; params: Record<string, unknown> }[] | null;
};
export default validate;
