/**
 * Memory sizes on the command line: "512" (MiB), "512M", "2G", "1048576K", "64MiB", "1.5G", and
 * "4096B" (bytes: a B alone is bytes, as in QEMU's -m 4096B).
 */
const UNITS: Record<string, number> = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Bytes for `text`, or undefined if it is not a size or not a whole number of bytes. */
export function parseSize(text: string): number | undefined {
  const m = /^ *(\d+(?:\.\d+)?) *(?:([kmgt])(?:i?b)?|(b))? *$/i.exec(text);
  if (!m) return undefined;
  const unit = m[2] ? UNITS[m[2].toLowerCase()]! : m[3] ? 1 : 2 ** 20;
  const bytes = Number(m[1]) * unit;
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

export function formatSize(bytes: number): string {
  for (const [unit, div] of [['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 2 ** 10]] as const) {
    if (bytes >= div) return `${+(bytes / div).toFixed(1)} ${unit}`;
  }
  return `${bytes} bytes`;
}
