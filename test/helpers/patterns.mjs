// Byte patterns for transfer tests: a lost, doubled or reordered segment changes their checksum.
export const downloadPattern = (n) => Buffer.from(Array.from({ length: n }, (_, i) => ((i * 131) ^ (i >>> 9) ^ 0x5a) & 0xff));
