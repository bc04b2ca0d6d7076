/**
 * Keys given twice in one JSON object. JSON.parse keeps the last silently, so a configuration file
 * or API body with `"boot-source"` twice would boot the second kernel without a word; Firecracker
 * (serde) refuses such input with "duplicate field", and so do we. jsonc-parser's visitor sees every
 * key as written (unescaped), which JSON.parse's result no longer shows.
 */
import { visit, type JSONPath } from 'jsonc-parser';

/**
 * The first key that appears twice in one object of `text` (well-formed JSON: call after
 * JSON.parse has accepted it), as a path such as `drives[0].path_on_host`; undefined if none does.
 */
export function duplicateKey(text: string): string | undefined {
  const open: Set<string>[] = []; // the keys seen in each object being read, innermost last
  let found: string | undefined;
  visit(
    text,
    {
      onObjectBegin: () => {
        open.push(new Set());
      },
      onObjectEnd: () => {
        open.pop();
      },
      onObjectProperty: (key, _offset, _length, _line, _column, pathSupplier) => {
        const keys = open[open.length - 1]!;
        if (keys.has(key)) found ??= formatPath([...pathSupplier(), key]);
        keys.add(key);
      },
    },
    { disallowComments: true },
  );
  return found;
}

/** `drives[0].path_on_host`; a key that is not a plain word is quoted: `a["x y"]`. */
function formatPath(path: JSONPath): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else if (/^[A-Za-z_][\w-]*$/.test(part)) out += out ? `.${part}` : part;
    else out += `[${JSON.stringify(part)}]`;
  }
  return out;
}
