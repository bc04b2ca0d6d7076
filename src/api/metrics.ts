/**
 * Firecracker-style metrics (PUT /metrics, the FlushMetrics action, and a flush every minute): one
 * JSON line per flush, `utc_timestamp_ms` first, then a group of counters per device and their
 * totals. As in Firecracker, each counter is its change since the previous line of the same file.
 * Groups and the counters nodevisor keeps:
 *   block, block_<drive_id>:     read_count, write_count, flush_count, discard_count, read_bytes, write_bytes
 *   net, net_<iface_id>:         rx_packets_count, tx_packets_count, rx_dropped_count, tx_dropped_count
 *   entropy (with PUT /entropy): entropy_bytes
 */
import type { VirtioDevice } from '../devices/virtio/device.js';
import { VirtioBlk } from '../devices/virtio/blk.js';
import { VirtioNet } from '../devices/virtio/net.js';
import { VirtioRng } from '../devices/virtio/rng.js';
import { OutputFile } from './output-file.js';

/** Cumulative counters by group name. */
export type MetricGroups = Record<string, Record<string, number>>;

/** How often metrics are written without being asked (Firecracker's period). */
export const METRICS_PERIOD_MS = 60_000;

export interface MetricSources {
  /** The running machine's device models (none before InstanceStart: every counter is 0). */
  readonly models: readonly VirtioDevice[];
  /** Drive and interface ids, in the order their devices were created. */
  readonly driveIds: readonly string[];
  readonly ifaceIds: readonly string[];
  readonly entropy: boolean;
}

const blockCounters = (d: VirtioBlk | undefined) => ({
  read_count: d?.reads ?? 0, write_count: d?.writes ?? 0, flush_count: d?.flushes ?? 0, discard_count: d?.discards ?? 0,
  read_bytes: d?.bytesRead ?? 0, write_bytes: d?.bytesWritten ?? 0,
});

const netCounters = (n: VirtioNet | undefined) => ({
  rx_packets_count: n?.rxFrames ?? 0, tx_packets_count: n?.txFrames ?? 0, rx_dropped_count: n?.rxDropped ?? 0, tx_dropped_count: n?.txDropped ?? 0,
});

/** The counters of every configured device, per device and in total. */
export function deviceMetrics(src: MetricSources): MetricGroups {
  const blks = src.models.filter((m): m is VirtioBlk => m instanceof VirtioBlk);
  const nets = src.models.filter((m): m is VirtioNet => m instanceof VirtioNet);
  const groups: MetricGroups = {};
  groups.block = total(src.driveIds.map((id, i) => (groups[`block_${id}`] = blockCounters(blks[i]))), blockCounters(undefined));
  groups.net = total(src.ifaceIds.map((id, i) => (groups[`net_${id}`] = netCounters(nets[i]))), netCounters(undefined));
  if (src.entropy) groups.entropy = { entropy_bytes: src.models.find((m): m is VirtioRng => m instanceof VirtioRng)?.served ?? 0 };
  return groups;
}

function total(parts: Record<string, number>[], zero: Record<string, number>): Record<string, number> {
  const sum = { ...zero };
  for (const p of parts) for (const k of Object.keys(sum)) sum[k]! += p[k] ?? 0;
  return sum;
}

/** The file or named pipe metrics go to. */
export class MetricsFile {
  readonly #out: OutputFile;
  /** Each counter's value at the previous line, by "group.counter". */
  readonly #last = new Map<string, number>();

  constructor(readonly path: string) {
    this.#out = new OutputFile(path, 'metrics_path');
  }

  /** Lines a full pipe had no room for (its reader is behind): dropped rather than waited for. */
  get dropped(): number {
    return this.#out.dropped;
  }

  get closed(): boolean {
    return this.#out.closed;
  }

  /** Writes one line: each counter as its change since the previous line. Throws on a file error. */
  write(groups: MetricGroups, now = Date.now()): void {
    const line: Record<string, unknown> = { utc_timestamp_ms: now };
    for (const [group, counters] of Object.entries(groups)) {
      const delta: Record<string, number> = {};
      for (const [name, value] of Object.entries(counters)) {
        const key = `${group}.${name}`;
        delta[name] = value - (this.#last.get(key) ?? 0);
        this.#last.set(key, value);
      }
      line[group] = delta;
    }
    this.#out.write(`${JSON.stringify(line)}\n`);
  }

  close(): void {
    this.#out.close();
  }
}
