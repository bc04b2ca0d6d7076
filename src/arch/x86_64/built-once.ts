/**
 * Firmware tables built once per machine shape: machines of the same configuration get the same
 * bytes, and building them showed in machines started per second under nested emulation. A few
 * shapes are kept (the oldest goes first); `key` must name everything the build depends on.
 */
export function builtOnce<T>(kept: number): (key: string, build: () => T) => T {
  const built = new Map<string, T>();
  return (key, build) => {
    let value = built.get(key);
    if (value === undefined) {
      value = build();
      if (built.size >= kept) built.delete(built.keys().next().value!);
      built.set(key, value);
    }
    return value;
  };
}
