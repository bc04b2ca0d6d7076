/**
 * Human-friendly progress on a terminal: one status line rewritten in place ("booting ...",
 * "running ..."), erased when the work it describes is done. Silent when stderr is not a TTY (CI
 * logs stay clean) or when the caller turns it off (--json).
 */
export class Progress {
  readonly #enabled: boolean;
  #shown = false;

  constructor(private readonly out: NodeJS.WriteStream, enabled = true) {
    this.#enabled = enabled && out.isTTY === true;
  }

  update(message: string): void {
    if (!this.#enabled) return;
    const width = Math.max(60, (this.out.columns || 80) - 1);
    const line = `nodevisor: ${message}...`;
    this.out.write(`\r\x1b[K${line.length > width ? `${line.slice(0, width - 1)}…` : line}`);
    this.#shown = true;
  }

  /** Erases the status line (output that follows starts on a clean line). */
  done(): void {
    if (!this.#shown) return;
    this.out.write('\r\x1b[K');
    this.#shown = false;
  }
}
