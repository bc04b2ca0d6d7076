/**
 * Generated at build time by scripts/build-validators.mjs (ajv standalone code): for each
 * `...Schema` export of schemas.ts, a validator of the same name; the default export has them all.
 */
type Validator = ((data: unknown) => boolean) & {
  errors?: { instancePath: string; schemaPath: string; keyword: string; message?: string; params: Record<string, unknown> }[] | null;
};
declare const validators: { readonly [schemaName: string]: Validator | undefined };
export default validators;
