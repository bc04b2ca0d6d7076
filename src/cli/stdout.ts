/**
 * Command output on stdout, with its write errors handled. A reader that went away (EPIPE:
 * `nodevisor doctor | head -1`) ends our output quietly, as it ends cat's; any other failure (a full
 * disk) is one line on stderr and exit status 1. Unhandled, either was an 'error' event on
 * process.stdout: a crash with a stack trace.
 */
let out: NodeJS.WriteStream | undefined;
let failed = false;

export function writeOut(data: string | Uint8Array): void {
  if (failed) return;
  if (!out) {
    out = process.stdout;
    out.on('error', (e: NodeJS.ErrnoException) => {
      if (failed) return;
      failed = true;
      if (e.code === 'EPIPE') return;
      process.stderr.write(`nodevisor: writing to standard output: ${e.message}\n`);
      process.exitCode = 1;
    });
  }
  out.write(data);
}
