// A VirtioDeviceContext for device-model tests: the queues are given, interrupts are counted the way
// the transport decides them (SplitQueue.needsInterrupt), and failures are recorded.
export function fakeContext(mem, queues, negotiated = 0n) {
  const ctx = {
    mem,
    negotiated,
    live: true,
    interrupts: 0,
    configChanges: 0,
    failures: [],
    logs: [],
    queue: (i) => queues[i],
    usedAdded(i, before) {
      if (queues[i]?.needsInterrupt(before)) ctx.interrupts++;
    },
    configChanged() {
      ctx.configChanges++;
    },
    fail(e) {
      ctx.failures.push(e);
    },
    log: {
      warn: (o, m) => ctx.logs.push(['warn', m]),
      info: (o, m) => ctx.logs.push(['info', m]),
      debug: (o, m) => ctx.logs.push(['debug', m]),
    },
  };
  return ctx;
}
