/**
 * The REST control plane: Firecracker's API over a unix socket, as far as nodevisor's features go,
 * so that existing Firecracker scripts drive nodevisor unchanged. Pre-boot resources (boot source,
 * machine config, drives, network interfaces) are collected, InstanceStart builds and starts the
 * Machine, PATCH /vm pauses and resumes it. Errors are `{"fault_message": ...}` with status 400;
 * a refused request changes nothing.
 */
import { existsSync, statSync, chmodSync, unlinkSync } from 'node:fs';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Machine, type MachineConfig } from '../vmm/machine.js';
import type { StopReason } from '../vmm/stop.js';
import { VmmError, describeError } from '../errors.js';
import { actionSchema, bootSourceSchema, driveSchema, machineConfigSchema, networkInterfaceSchema, vmStateSchema } from './schemas.js';

export interface BootSource { kernel_image_path: string; boot_args?: string; initrd_path?: string }
export interface Drive { drive_id: string; path_on_host: string; is_root_device: boolean; is_read_only?: boolean; partuuid?: string }
export interface NetworkInterface { iface_id: string; host_dev_name: string; guest_mac?: string }
export interface MachineConfiguration { vcpu_count: number; mem_size_mib: number; smt: boolean; track_dirty_pages: boolean; huge_pages: 'None' | 'Transparent' | '2M' }

/** Firecracker's InstanceInfo.state values. */
export type InstanceState = 'Not started' | 'Running' | 'Paused';

class ApiError extends Error {}
const fault = (message: string) => new ApiError(message);

export interface ApiServerOptions {
  readonly id: string;
  readonly version: string;
  readonly log: Logger;
  /** Where the guest's serial console goes (Firecracker: the process's stdout). */
  readonly consoleFd?: number;
  /** Extra machine settings not in the Firecracker API (log level for vCPU threads...). */
  readonly machineDefaults?: Partial<MachineConfig>;
}

export class ApiServer {
  readonly app: FastifyInstance;
  #boot: BootSource | undefined;
  #machineConfig: MachineConfiguration = { vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false, huge_pages: 'None' };
  #machine: Machine | undefined;
  /** Drives and NICs by id, in the order first PUT (a PUT of an existing id replaces it in place). */
  readonly #drives = new Map<string, Drive>();
  readonly #nets = new Map<string, NetworkInterface>();
  #socketPath: string | undefined;
  /** Resolves with how the guest ended once an instance was started and has stopped. */
  readonly stopped: Promise<StopReason>;
  #onStopped!: (r: StopReason) => void;

  constructor(private readonly opts: ApiServerOptions) {
    this.stopped = new Promise((resolve) => (this.#onStopped = resolve));
    const app = Fastify({
      logger: false,
      ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
      // One line naming the field: "vcpu_count must be >= 1", "unknown field bogus".
      schemaErrorFormatter: (errors) =>
        new Error(errors.map((e) => (e.keyword === 'additionalProperties' ? `unknown field ${String((e.params as { additionalProperty?: string }).additionalProperty)}` : `${e.instancePath.replace(/^\//, '') || 'body'} ${e.message ?? 'is invalid'}`)).join('; ')),
    });
    this.app = app;

    app.setErrorHandler((err, _req, reply) => {
      const e = err as Error & { validation?: unknown; statusCode?: number };
      if (e instanceof ApiError || e.validation) return reply.code(400).send({ fault_message: e instanceof ApiError ? e.message : `invalid request: ${e.message}` });
      if (e instanceof VmmError) return reply.code(400).send({ fault_message: e.message });
      if (e.statusCode && e.statusCode < 500) return reply.code(e.statusCode).send({ fault_message: e.message });
      opts.log.error({ err: e }, 'API request failed');
      return reply.code(500).send({ fault_message: describeError(e) });
    });
    app.setNotFoundHandler((req, reply) => reply.code(400).send({ fault_message: `Invalid request method and/or path: ${req.method} ${req.url}` }));

    app.get('/', async () => ({ id: opts.id, state: this.state, vmm_version: opts.version, app_name: 'nodevisor' }));

    app.get('/machine-config', async () => this.#machineConfig);
    app.put<{ Body: Partial<MachineConfiguration> & Pick<MachineConfiguration, 'vcpu_count' | 'mem_size_mib'> }>('/machine-config', { schema: { body: machineConfigSchema } }, async (req, reply) => {
      this.#preBoot();
      if (req.body.smt) throw fault('SMT is not supported');
      this.#machineConfig = { smt: false, track_dirty_pages: false, huge_pages: 'None', ...req.body };
      return reply.code(204).send();
    });

    app.put<{ Body: BootSource }>('/boot-source', { schema: { body: bootSourceSchema } }, async (req, reply) => {
      this.#preBoot();
      for (const [field, path] of [['kernel_image_path', req.body.kernel_image_path], ['initrd_path', req.body.initrd_path]] as const) {
        if (path === undefined) continue;
        if (!existsSync(path) || !statSync(path).isFile()) throw fault(`${field} ${path}: no such file`);
      }
      this.#boot = { ...req.body };
      return reply.code(204).send();
    });

    app.put<{ Params: { drive_id: string }; Body: Drive & { cache_type?: string; io_engine?: string } }>('/drives/:drive_id', { schema: { body: driveSchema } }, async (req, reply) => {
      this.#preBoot();
      const d = req.body;
      if (d.drive_id !== req.params.drive_id) throw fault(`drive_id in the body (${d.drive_id}) differs from the path (${req.params.drive_id})`);
      if (d.partuuid !== undefined) throw fault('partuuid: booting from a partition is not supported (the root device is the whole disk)');
      if (!existsSync(d.path_on_host) || !statSync(d.path_on_host).isFile()) throw fault(`path_on_host ${d.path_on_host}: no such file`);
      if (d.is_root_device) {
        const other = [...this.#drives.values()].find((x) => x.is_root_device && x.drive_id !== d.drive_id);
        if (other) throw fault(`drive ${other.drive_id} is already the root device`);
      }
      this.#drives.set(d.drive_id, { drive_id: d.drive_id, path_on_host: d.path_on_host, is_root_device: d.is_root_device, ...(d.is_read_only !== undefined ? { is_read_only: d.is_read_only } : {}) });
      return reply.code(204).send();
    });

    app.put<{ Params: { iface_id: string }; Body: NetworkInterface & { mtu?: number } }>('/network-interfaces/:iface_id', { schema: { body: networkInterfaceSchema } }, async (req, reply) => {
      this.#preBoot();
      const n = req.body;
      if (n.iface_id !== req.params.iface_id) throw fault(`iface_id in the body (${n.iface_id}) differs from the path (${req.params.iface_id})`);
      if (n.mtu !== undefined) throw fault('mtu: setting the MTU is not supported');
      if (n.guest_mac !== undefined && parseInt(n.guest_mac.slice(0, 2), 16) & 1) throw fault(`guest_mac ${n.guest_mac}: a multicast address`);
      const clash = [...this.#nets.values()].find((x) => x.host_dev_name === n.host_dev_name && x.iface_id !== n.iface_id);
      if (clash) throw fault(`host_dev_name ${n.host_dev_name} is already used by ${clash.iface_id}`);
      this.#nets.set(n.iface_id, { iface_id: n.iface_id, host_dev_name: n.host_dev_name, ...(n.guest_mac !== undefined ? { guest_mac: n.guest_mac } : {}) });
      return reply.code(204).send();
    });

    app.put<{ Body: { action_type: 'FlushMetrics' | 'InstanceStart' | 'SendCtrlAltDel' } }>('/actions', { schema: { body: actionSchema } }, async (req, reply) => {
      switch (req.body.action_type) {
        case 'InstanceStart':
          this.#start();
          break;
        case 'SendCtrlAltDel':
          if (!this.#machine || this.state === 'Not started') throw fault('SendCtrlAltDel: the microVM is not running');
          this.#machine.sendCtrlAltDel();
          break;
        case 'FlushMetrics':
          throw fault('FlushMetrics: metrics are not configured');
      }
      return reply.code(204).send();
    });

    app.patch<{ Body: { state: 'Paused' | 'Resumed' } }>('/vm', { schema: { body: vmStateSchema } }, async (req, reply) => {
      const m = this.#machine;
      if (!m) throw fault('the microVM has not been started');
      if (req.body.state === 'Paused') {
        if (m.state !== 'running') throw fault(`cannot pause a microVM that is ${m.state}`);
        await m.pause();
      } else {
        if (m.state !== 'paused') throw fault(`cannot resume a microVM that is ${m.state}`);
        m.resume();
      }
      return reply.code(204).send();
    });
  }

  get state(): InstanceState {
    const s = this.#machine?.state;
    if (s === 'paused') return 'Paused';
    return s === undefined || s === 'created' ? 'Not started' : 'Running';
  }

  #preBoot(): void {
    if (this.#machine) throw fault('The requested operation is not supported after starting the microVM.');
  }

  #start(): void {
    if (this.#machine) throw fault('InstanceStart: the microVM has already been started');
    if (!this.#boot) throw fault('InstanceStart: no boot source (PUT /boot-source first)');
    const mc = this.#machineConfig;
    // As Firecracker: the root device is the first disk (vda), named on the kernel command line.
    const drives = [...this.#drives.values()].sort((a, b) => Number(b.is_root_device) - Number(a.is_root_device));
    const root = drives.find((d) => d.is_root_device);
    let cmdline = this.#boot.boot_args;
    if (root && !/(^|\s)root=/.test(cmdline ?? '')) cmdline = `${cmdline ?? ''} root=/dev/vda ${root.is_read_only ? 'ro' : 'rw'}`.trim();
    const machine = Machine.create(
      {
        ...this.opts.machineDefaults,
        kernel: this.#boot.kernel_image_path,
        ...(this.#boot.initrd_path !== undefined ? { initrd: this.#boot.initrd_path } : {}),
        ...(cmdline !== undefined ? { cmdline } : {}),
        disks: drives.map((d) => ({ path: d.path_on_host, ...(d.is_read_only ? { readOnly: true } : {}), id: d.drive_id.slice(0, 20) })),
        nets: [...this.#nets.values()].map((n) => ({ tap: n.host_dev_name, ...(n.guest_mac !== undefined ? { mac: n.guest_mac.toLowerCase() } : {}) })),
        memBytes: mc.mem_size_mib * 2 ** 20,
        cpus: mc.vcpu_count,
        hugepages: mc.huge_pages === 'Transparent' ? 1 : mc.huge_pages === '2M' ? 2 : 0,
        consoleFd: this.opts.consoleFd ?? 1,
      },
      this.opts.log,
    );
    this.#machine = machine;
    void machine.start().then((r) => this.#onStopped(r));
  }

  /** Listens on a new unix socket readable and writable by its owner only. */
  async listen(socketPath: string): Promise<void> {
    if (existsSync(socketPath)) throw new VmmError('BAD_CONFIG', `--api-sock ${socketPath}: already exists (remove it, or choose another path)`);
    const old = process.umask(0o177);
    try {
      await this.app.listen({ path: socketPath });
    } finally {
      process.umask(old);
    }
    chmodSync(socketPath, 0o600);
    this.#socketPath = socketPath;
  }

  async close(): Promise<void> {
    this.#machine?.kill();
    await this.app.close();
    if (this.#socketPath && existsSync(this.#socketPath)) unlinkSync(this.#socketPath);
  }
}
