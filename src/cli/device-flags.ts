/**
 * The device flags of `nodevisor run`, in the forms kvmtool and QEMU users know:
 *   --disk PATH[,ro][,id=NAME]      --net tap=NAME[,mac=MAC]      --share HOSTDIR:TAG[,ro]
 * Each parser returns the machine-config entry or throws one line naming the flag and the value.
 */
import path from 'node:path';
import { VmmError } from '../errors.js';

export interface DiskSpec { path: string; readOnly?: boolean; id?: string }
export interface NetSpec { tap: string; mac?: string }
export interface ShareSpec { hostDir: string; tag: string; readOnly?: boolean }

const bad = (flag: string, value: string, why: string) => new VmmError('BAD_CONFIG', `--${flag} ${value}: ${why}`);

/** Splits "first,key=value,flag" into the first field and the options after it. */
function fields(flag: string, value: string): { first: string; opts: Map<string, string | true> } {
  const [first = '', ...rest] = value.split(',');
  const opts = new Map<string, string | true>();
  for (const r of rest) {
    const eq = r.indexOf('=');
    const key = eq < 0 ? r : r.slice(0, eq);
    if (opts.has(key)) throw bad(flag, value, `option "${key}" given twice`);
    opts.set(key, eq < 0 ? true : r.slice(eq + 1));
  }
  return { first, opts };
}

function only(flag: string, value: string, opts: Map<string, string | true>, allowed: Record<string, 'flag' | 'value'>): void {
  for (const [key, v] of opts) {
    const kind = allowed[key];
    if (!kind) throw bad(flag, value, `unknown option "${key}" (allowed: ${Object.keys(allowed).join(', ')})`);
    if (kind === 'flag' && v !== true) throw bad(flag, value, `"${key}" takes no value`);
    if (kind === 'value' && (v === true || v === '')) throw bad(flag, value, `"${key}" needs a value (${key}=...)`);
  }
}

export function parseDisk(value: string): DiskSpec {
  const { first, opts } = fields('disk', value);
  only('disk', value, opts, { ro: 'flag', id: 'value' });
  if (!first) throw bad('disk', value, 'no image path');
  const id = opts.get('id') as string | undefined;
  if (id !== undefined && Buffer.byteLength(id) > 20) throw bad('disk', value, `id "${id}" is longer than 20 bytes (virtio-blk's limit)`);
  return { path: first, ...(opts.has('ro') ? { readOnly: true } : {}), ...(id !== undefined ? { id } : {}) };
}

export function parseNet(value: string): NetSpec {
  const { first, opts } = fields('net', value);
  // "tap=NAME" is the first field, as in kvmtool's --network mode=tap,tapif=NAME spirit but shorter.
  const all = new Map(opts);
  if (first) {
    const eq = first.indexOf('=');
    if (eq < 0) throw bad('net', value, 'expected tap=NAME[,mac=MAC]');
    if (all.has(first.slice(0, eq))) throw bad('net', value, `option "${first.slice(0, eq)}" given twice`);
    all.set(first.slice(0, eq), first.slice(eq + 1));
  }
  only('net', value, all, { tap: 'value', mac: 'value' });
  const tap = all.get('tap') as string | undefined;
  if (!tap) throw bad('net', value, 'no tap interface (tap=NAME)');
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(tap)) throw bad('net', value, `tap name "${tap}" is not a valid interface name (1-15 letters, digits, _ . -)`);
  const mac = all.get('mac') as string | undefined;
  if (mac !== undefined) {
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw bad('net', value, `mac "${mac}" is not six hex bytes separated by colons`);
    if (parseInt(mac.slice(0, 2), 16) & 1) throw bad('net', value, `mac "${mac}" is a multicast address`);
  }
  return { tap, ...(mac !== undefined ? { mac: mac.toLowerCase() } : {}) };
}

export function parseShare(value: string): ShareSpec {
  const { first, opts } = fields('share', value);
  only('share', value, opts, { ro: 'flag', rw: 'flag' });
  const colon = first.lastIndexOf(':');
  if (colon <= 0 || colon === first.length - 1) throw bad('share', value, 'expected HOSTDIR:TAG[,ro]');
  const tag = first.slice(colon + 1);
  if (Buffer.byteLength(tag) > 36) throw bad('share', value, `tag "${tag}" is longer than 36 bytes`);
  if (opts.has('ro') && opts.has('rw')) throw bad('share', value, '"ro" and "rw" together');
  return { hostDir: first.slice(0, colon), tag, ...(opts.has('ro') ? { readOnly: true } : {}) };
}

/**
 * What no single flag shows: two NICs on one tap or with one MAC, two disks with one id or one image
 * written by both, two shares with one tag. Each would be refused later with a less clear message,
 * or not at all (one image written through two caches).
 */
export function checkDeviceSet(disks: readonly DiskSpec[], nets: readonly NetSpec[], shares: readonly ShareSpec[]): void {
  const twice = <T>(items: readonly T[], key: (t: T) => string | undefined, say: (k: string) => string) => {
    const seen = new Set<string>();
    for (const item of items) {
      const k = key(item);
      if (k === undefined) continue;
      if (seen.has(k)) throw new VmmError('BAD_CONFIG', say(k));
      seen.add(k);
    }
  };
  twice(nets, (n) => n.tap, (k) => `--net: tap ${k} is given twice (one NIC per tap)`);
  twice(nets, (n) => n.mac, (k) => `--net: mac ${k} is given twice`);
  twice(disks, (d) => d.id, (k) => `--disk: id ${k} is given twice`);
  twice(disks, (d) => (d.readOnly ? undefined : path.resolve(d.path)), (k) => `--disk: ${k} is given twice, writable (add ,ro to share it read-only)`);
  twice(shares, (s) => s.tag, (k) => `--share: tag ${k} is given twice`);
}
