/**
 * The REST control plane: Firecracker's API over a unix socket, as far as nodevisor's features go,
 * so that existing Firecracker scripts drive nodevisor unchanged. Pre-boot resources (boot source,
 * machine config, drives, network interfaces) are collected, InstanceStart builds and starts the
 * Machine, PATCH /vm pauses and resumes it. PUT /logger sends the logs to a file or named pipe,
 * PUT /metrics makes FlushMetrics (and a timer) write device counters to one, PUT /entropy adds
 * virtio-rng. Errors are `{"fault_message": ...}` with status 400; a refused request changes nothing.
 */
import { existsSync, lstatSync, statSync, chmodSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifySchemaCompiler, type FastifyServerOptions } from 'fastify';
import type { Logger } from 'pino';
import { createLogger, createLoggerTo, type LogLevel } from '../log.js';
import { Machine, type MachineConfig } from '../vmm/machine.js';
import type { StopReason } from '../vmm/stop.js';
import { VmmError, describeError } from '../errors.js';
import * as schemas from './schemas.js';
import { actionSchema, bootSourceSchema, driveSchema, entropySchema, loggerSchema, machineConfigPatchSchema, machineConfigSchema, metricsSchema, networkInterfaceSchema, vmStateSchema } from './schemas.js';
import precompiled from './api-validators.js';
import { deviceMetrics, METRICS_PERIOD_MS, MetricsFile } from './metrics.js';
import { OutputFile } from './output-file.js';
import { duplicateKey } from './duplicate-keys.js';

export interface BootSource { kernel_image_path: string; boot_args?: string; initrd_path?: string }
export interface Drive { drive_id: string; path_on_host: string; is_root_device: boolean; is_read_only?: boolean; partuuid?: string }
export interface NetworkInterface { iface_id: string; host_dev_name: string; guest_mac?: string }
export interface MachineConfiguration { vcpu_count: number; mem_size_mib: number; smt: boolean; track_dirty_pages: boolean; huge_pages: 'None' | 'Transparent' | '2M' }
type MachineConfigBody = Partial<MachineConfiguration> & { cpu_template?: string };
export interface LoggerConfig { log_path?: string; level?: string; show_level?: boolean; show_log_origin?: boolean; module?: string }

/** Firecracker's machine before any PUT /machine-config: one vCPU, 128 MiB. */
const DEFAULT_MACHINE_CONFIG: MachineConfiguration = { vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false, huge_pages: 'None' };

/** The longest path a unix socket can be bound to (sun_path less its NUL). */
const UNIX_PATH_MAX = 107;

/** The sections of a Firecracker configuration file that nodevisor takes (FullVmConfiguration). */
const CONFIG_SECTIONS = ['boot-source', 'drives', 'machine-config', 'network-interfaces', 'logger', 'metrics', 'entropy'];

/** Firecracker's log levels (case-insensitive) as pino's. */
const FIRECRACKER_LEVELS: Record<string, LogLevel> = { error: 'error', warning: 'warn', info: 'info', debug: 'debug', trace: 'trace', off: 'silent' };

/** Firecracker's InstanceInfo.state values. */
export type InstanceState = 'Not started' | 'Running' | 'Paused';

/**
 * The body validators, compiled from schemas.ts at build time (scripts/build-validators.mjs), by the
 * schema object a route names: fastify would otherwise load ajv and compile every schema at start-up.
 */
const validators = new Map<object, NonNullable<(typeof precompiled)[string]>>();
for (const [name, schema] of Object.entries(schemas)) {
  const validate = precompiled[name];
  if (validate) validators.set(schema, validate);
}
const precompiledValidator: FastifySchemaCompiler<unknown> = ({ schema }) => {
  const validate = validators.get(schema as object);
  // A route given a schema that is not an export of schemas.ts: a bug of ours, found at start-up.
  if (!validate) throw new Error(`no precompiled validator for the schema ${JSON.stringify(schema)} (export it from src/api/schemas.ts)`);
  return validate;
};
/**
 * Fastify's factory of validator compilers. Fastify calls the compiler with the route's schema
 * definition ({ schema, method, url, httpPart }: lib/validation.js), as setValidatorCompiler's type
 * says; the option's type, taken from @fastify/ajv-compiler, says it gets the bare schema.
 */
type CompilersFactory = NonNullable<NonNullable<FastifyServerOptions['schemaController']>['compilersFactory']>;
const buildValidator = (() => precompiledValidator) as unknown as CompilersFactory['buildValidator'];
/**
 * Replies have no response schemas (fastify sends them with JSON.stringify), so nothing needs a
 * serializer compiler; the default one would load fast-json-stringify and, with it, ajv.
 */
const buildSerializer = (() => () => {
  throw new Error('response schemas are not used by the API server');
}) as unknown as CompilersFactory['buildSerializer'];

class ApiError extends Error {}
const fault = (message: string) => new ApiError(message);
const EMPTY_BODY = 'the request body is empty: a JSON object was expected';

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
  #machineConfig: MachineConfiguration = { ...DEFAULT_MACHINE_CONFIG };
  #machine: Machine | undefined;
  /** Where logs go: the one given, until PUT /logger replaces it (for machines started after). */
  #log: Logger;
  #logger: LoggerConfig | undefined;
  #logFile: OutputFile | undefined;
  #metrics: MetricsFile | undefined;
  #metricsTimer: NodeJS.Timeout | undefined;
  #entropy = false;
  /** Drive and interface ids in the order the started machine's devices were created. */
  #started: { driveIds: string[]; ifaceIds: string[] } | undefined;
  /** Drives and NICs by id, in the order first PUT (a PUT of an existing id replaces it in place). */
  readonly #drives = new Map<string, Drive>();
  readonly #nets = new Map<string, NetworkInterface>();
  #socketPath: string | undefined;
  /** Resolves with how the guest ended once an instance was started and has stopped. */
  readonly stopped: Promise<StopReason>;
  #onStopped!: (r: StopReason) => void;

  constructor(private readonly opts: ApiServerOptions) {
    this.stopped = new Promise((resolve) => (this.#onStopped = resolve));
    this.#log = opts.log;
    const app = Fastify({
      logger: false,
      // On close (a signal, the guest's end), requests still being sent must not hold the process.
      forceCloseConnections: true,
      // Firecracker routes on method and path alone: /machine-config/ and //actions are the same resources.
      routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true },
      // Requests fastify refuses before any route (a bad URL escape) answer like the rest.
      frameworkErrors: (err, _req, reply) => void (reply as FastifyReply).code(400).send({ fault_message: `invalid request: ${err.message}` }),
      // ...and so do requests Node's HTTP parser refuses (two Content-Length headers, a bad header).
      clientErrorHandler: (err, socket) => {
        const body = JSON.stringify({ fault_message: `invalid request: ${err.message}` });
        if (socket.writable) socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
        else socket.destroy();
      },
      // Bodies are checked by validators compiled at build time (no coercion, unknown fields refused,
      // the first error only: see scripts/build-validators.mjs), not by an ajv built at start-up.
      schemaController: { compilersFactory: { buildValidator, buildSerializer } },
      // One line naming the field: "vcpu_count must be >= 1", "unknown field bogus".
      schemaErrorFormatter: (errors) =>
        new Error(errors.map((e) => (e.keyword === 'additionalProperties' ? `unknown field ${String((e.params as { additionalProperty?: string }).additionalProperty)}` : `${e.instancePath.replace(/^\//, '') || 'body'} ${e.message ?? 'is invalid'}`)).join('; ')),
    });
    this.app = app;
    // Every body is JSON, whatever its Content-Type says: Firecracker reads the body without looking
    // at the header, and its own examples send bodies with a bare `curl -d`, which labels them as form
    // data. Fastify's own JSON parser, so prototype-poisoning keys are still refused; its errors speak
    // of the header, so ours say what is wrong with the body instead.
    app.removeAllContentTypeParsers();
    const secureJson = app.getDefaultJsonParser('error', 'error');
    app.addContentTypeParser('*', { parseAs: 'string' }, (req, body, done) =>
      secureJson(req, body as string, (err, value) => {
        if (!err) {
          // JSON.parse keeps a key's last value: Firecracker refuses the body instead ("duplicate field").
          const twice = duplicateKey(body as string);
          return twice === undefined ? done(null, value) : done(fault(`the request body gives ${twice} twice`), undefined);
        }
        if (body.length === 0) return done(fault(EMPTY_BODY), undefined);
        try {
          JSON.parse(body as string);
        } catch (e) {
          return done(fault(`the request body is not JSON: ${(e as Error).message}`), undefined);
        }
        done(fault('the request body has a __proto__ or constructor.prototype key'), undefined);
      }),
    );

    app.setErrorHandler((err, req, reply) => {
      const e = err as Error & { validation?: unknown; statusCode?: number };
      // No body at all (no Content-Length, or 0) reaches no parser: say so, as for an empty one.
      if (e.validation && req.body === undefined) return reply.code(400).send({ fault_message: EMPTY_BODY });
      if (e instanceof ApiError || e.validation) return reply.code(400).send({ fault_message: e instanceof ApiError ? e.message : `invalid request: ${e.message}` });
      if (e instanceof VmmError) return reply.code(400).send({ fault_message: e.message });
      if (e.statusCode && e.statusCode < 500) return reply.code(e.statusCode).send({ fault_message: e.message });
      this.#log.error({ err: e }, 'API request failed');
      return reply.code(500).send({ fault_message: describeError(e) });
    });
    app.setNotFoundHandler((req, reply) => reply.code(400).send({ fault_message: `Invalid request method and/or path: ${req.method} ${req.url}` }));

    app.get('/', async () => ({ id: opts.id, state: this.state, vmm_version: opts.version, app_name: 'nodevisor' }));

    app.get('/machine-config', async () => this.#machineConfig);
    // PUT sets every field (those left out take their defaults); PATCH changes only those given.
    app.put<{ Body: MachineConfigBody }>('/machine-config', { schema: { body: machineConfigSchema } }, async (req, reply) => {
      this.#setMachineConfig(DEFAULT_MACHINE_CONFIG, req.body);
      return reply.code(204).send();
    });
    app.patch<{ Body: MachineConfigBody }>('/machine-config', { schema: { body: machineConfigPatchSchema } }, async (req, reply) => {
      if (Object.keys(req.body).length === 0) throw fault('Empty PATCH request.'); // Firecracker's words
      this.#setMachineConfig(this.#machineConfig, req.body);
      return reply.code(204).send();
    });

    app.get('/version', async () => ({ firecracker_version: opts.version }));

    app.get('/vm/config', async () => ({
      ...(this.#boot ? { 'boot-source': this.#boot } : {}),
      drives: [...this.#drives.values()],
      'machine-config': this.#machineConfig,
      'network-interfaces': [...this.#nets.values()],
      ...(this.#logger ? { logger: this.#logger } : {}),
      ...(this.#metrics ? { metrics: { metrics_path: this.#metrics.path } } : {}),
      ...(this.#entropy ? { entropy: {} } : {}),
    }));

    app.put<{ Body: LoggerConfig }>('/logger', { schema: { body: loggerSchema } }, async (req, reply) => {
      this.#preBoot();
      if (this.#logger) throw fault('the logger is already configured (PUT /logger is accepted once)');
      const b = req.body;
      const name = (b.level ?? 'Info').toLowerCase();
      const level = Object.hasOwn(FIRECRACKER_LEVELS, name) ? FIRECRACKER_LEVELS[name] : undefined;
      if (!level) throw fault(`level ${b.level}: expected Error, Warning, Info, Debug, Trace or Off`);
      if (b.module !== undefined) throw fault('module: filtering logs by module is not supported');
      // show_level and show_log_origin are accepted and change nothing: lines are JSON (pino) and
      // always carry their level, and name their machine, vCPU and device instead of a source line.
      if (b.log_path !== undefined) {
        const file = (this.#logFile = new OutputFile(b.log_path, 'log_path'));
        this.#log = createLoggerTo(level, { write: (line) => void tryWrite(file, line) });
      } else {
        this.#log = createLogger(level);
      }
      this.#logger = { ...b };
      return reply.code(204).send();
    });

    app.put<{ Body: { metrics_path: string } }>('/metrics', { schema: { body: metricsSchema } }, async (req, reply) => {
      if (this.#metrics) throw fault('metrics are already configured (PUT /metrics is accepted once)');
      this.#metrics = new MetricsFile(req.body.metrics_path);
      this.#metricsTimer = setInterval(() => this.#flushMetrics('timer'), METRICS_PERIOD_MS).unref();
      return reply.code(204).send();
    });

    app.put<{ Body: { rate_limiter?: object } }>('/entropy', { schema: { body: entropySchema } }, async (req, reply) => {
      this.#preBoot();
      if (req.body.rate_limiter !== undefined) throw fault('rate_limiter: rate limiting is not supported');
      this.#entropy = true;
      return reply.code(204).send();
    });

    app.put<{ Body: BootSource }>('/boot-source', { schema: { body: bootSourceSchema } }, async (req, reply) => {
      this.#preBoot();
      for (const [field, file] of [['kernel_image_path', req.body.kernel_image_path], ['initrd_path', req.body.initrd_path]] as const) {
        if (file !== undefined) checkRegularFile(field, file);
      }
      this.#boot = { ...req.body };
      return reply.code(204).send();
    });

    app.put<{ Params: { drive_id: string }; Body: Drive & { cache_type?: string; io_engine?: string } }>('/drives/:drive_id', { schema: { body: driveSchema } }, async (req, reply) => {
      this.#preBoot();
      const d = req.body;
      if (d.drive_id !== req.params.drive_id) throw fault(`drive_id in the body (${d.drive_id}) differs from the path (${req.params.drive_id})`);
      if (d.partuuid !== undefined) throw fault('partuuid: booting from a partition is not supported (the root device is the whole disk)');
      checkRegularFile('path_on_host', d.path_on_host);
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
          if (!this.#metrics) throw fault('FlushMetrics: metrics are not configured (PUT /metrics first)');
          this.#flushMetrics('action');
          break;
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

  #setMachineConfig(base: MachineConfiguration, body: MachineConfigBody): void {
    this.#preBoot();
    const { cpu_template: template, ...fields } = body;
    if (template !== undefined && template !== 'None') throw fault(`cpu_template ${template}: CPU templates are not supported (only None)`);
    const next = { ...base, ...fields };
    if (next.smt) throw fault('SMT is not supported');
    if (next.mem_size_mib * 2 ** 20 > os.totalmem()) throw fault(`mem_size_mib ${next.mem_size_mib}: more than this host's ${Math.floor(os.totalmem() / 2 ** 20)} MiB of RAM`);
    this.#machineConfig = next;
  }

  /** Writes a metrics line; an error fails the action, and is logged when the timer flushes. */
  #flushMetrics(why: 'action' | 'timer'): void {
    const started = this.#started;
    const groups = deviceMetrics({
      models: this.#machine?.virtio.map((d) => d.model) ?? [],
      driveIds: started?.driveIds ?? [...this.#drives.keys()],
      ifaceIds: started?.ifaceIds ?? [...this.#nets.keys()],
      entropy: this.#entropy,
    });
    try {
      this.#metrics!.write(groups);
    } catch (e) {
      if (why === 'action') throw fault(`FlushMetrics: ${this.#metrics!.path}: ${describeError(e)}`);
      this.#log.warn({ path: this.#metrics!.path, err: describeError(e) }, 'metrics: writing failed');
    }
  }

  #start(): void {
    if (this.#machine) throw fault('InstanceStart: the microVM has already been started');
    const boot = this.#boot;
    if (!boot) throw fault('InstanceStart: no boot source (PUT /boot-source first)');
    const mc = this.#machineConfig;
    // As Firecracker: the root device is the first disk (vda), named on the kernel command line.
    const drives = [...this.#drives.values()].sort((a, b) => Number(b.is_root_device) - Number(a.is_root_device));
    const root = drives.find((d) => d.is_root_device);
    let cmdline = boot.boot_args;
    if (root && !/(^|\s)root=/.test(cmdline ?? '')) cmdline = `${cmdline ?? ''} root=/dev/vda ${root.is_read_only ? 'ro' : 'rw'}`.trim();
    const machine = inApiTerms(() => Machine.create(
      {
        // A one-vCPU guest starts at once on this thread and moves to its own once it keeps
        // running (main-thread-vcpu.ts), instead of waiting ~50 ms for a worker's Node start-up:
        // InstanceStart to a running guest is what Firecracker users time. API requests still
        // come first: the guest only runs where the event loop would sleep.
        startOnMainThread: true,
        ...this.opts.machineDefaults,
        ...(this.#logger ? { logLevel: this.#log.level as LogLevel } : {}),
        ...(this.#entropy ? { rng: true } : {}),
        kernel: boot.kernel_image_path,
        ...(boot.initrd_path !== undefined ? { initrd: boot.initrd_path } : {}),
        ...(cmdline !== undefined ? { cmdline } : {}),
        disks: drives.map((d) => ({ path: d.path_on_host, ...(d.is_read_only ? { readOnly: true } : {}), id: d.drive_id.slice(0, 20) })),
        nets: [...this.#nets.values()].map((n) => ({ tap: n.host_dev_name, ...(n.guest_mac !== undefined ? { mac: n.guest_mac.toLowerCase() } : {}) })),
        memBytes: mc.mem_size_mib * 2 ** 20,
        cpus: mc.vcpu_count,
        hugepages: mc.huge_pages === 'Transparent' ? 1 : mc.huge_pages === '2M' ? 2 : 0,
        consoleFd: this.opts.consoleFd ?? 1,
      },
      this.#log,
    ));
    this.#started = { driveIds: drives.map((d) => d.drive_id), ifaceIds: [...this.#nets.keys()] };
    this.#machine = machine;
    void machine.start().then((r) => this.#onStopped(r));
  }

  /**
   * Configures and starts the microVM from a Firecracker configuration file's contents (`serve
   * --config-file`): each resource goes through the same handler and schema as its API request, in
   * the order a script would send them, then InstanceStart. Throws VmmError naming the section.
   */
  async bootFrom(config: unknown): Promise<void> {
    if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new VmmError('BAD_CONFIG', 'expected a JSON object of resources ("boot-source", "drives", ...)');
    const sections = config as Record<string, unknown>;
    const unknown = Object.keys(sections).find((k) => !CONFIG_SECTIONS.includes(k));
    if (unknown !== undefined) throw new VmmError('BAD_CONFIG', `unknown section "${unknown}" (nodevisor takes ${CONFIG_SECTIONS.join(', ')})`);
    const requests: [string, string, unknown][] = [];
    const single = (section: string, url: string) => {
      if (sections[section] !== undefined) requests.push([section, url, sections[section]]);
    };
    const list = (section: string, idField: string, base: string) => {
      const items = sections[section] ?? [];
      if (!Array.isArray(items)) throw new VmmError('BAD_CONFIG', `${section}: expected an array`);
      items.forEach((item: unknown, i) => {
        const id = (item as Record<string, unknown> | null)?.[idField];
        if (typeof id !== 'string' || id === '') throw new VmmError('BAD_CONFIG', `${section}[${i}]: ${idField} must be a non-empty string`);
        requests.push([`${section}[${i}]`, `${base}/${encodeURIComponent(id)}`, item]);
      });
    };
    single('logger', '/logger');
    single('metrics', '/metrics');
    single('machine-config', '/machine-config');
    single('boot-source', '/boot-source');
    list('drives', 'drive_id', '/drives');
    list('network-interfaces', 'iface_id', '/network-interfaces');
    single('entropy', '/entropy');
    if (sections['boot-source'] === undefined) throw new VmmError('BAD_CONFIG', 'no "boot-source" section: nothing to boot');
    for (const [label, url, body] of requests) {
      const r = await this.app.inject({ method: 'PUT', url, payload: body as object });
      if (r.statusCode >= 300) throw new VmmError('BAD_CONFIG', `${label}: ${(r.json() as { fault_message?: string }).fault_message ?? `status ${r.statusCode}`}`);
    }
    this.#start(); // directly, so that a failure keeps its own error code (no KVM, a bad kernel...)
  }

  /** Listens on a new unix socket readable and writable by its owner only. */
  async listen(socketPath: string): Promise<void> {
    const bad = (why: string) => new VmmError('BAD_CONFIG', `--api-sock ${socketPath}: ${why}`);
    if (socketPath === '') throw new VmmError('BAD_CONFIG', '--api-sock: an empty path');
    // sun_path holds 107 bytes and a NUL; Node would bind a shortened path instead.
    if (Buffer.byteLength(socketPath) > UNIX_PATH_MAX) throw bad(`longer than ${UNIX_PATH_MAX} bytes (the limit of a unix socket's path)`);
    let exists = true;
    try {
      lstatSync(socketPath);
    } catch {
      exists = false;
    }
    if (exists) throw bad('already exists (remove it, or choose another path)');
    const dir = path.dirname(socketPath);
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw bad(`no such directory ${dir}`);
    const old = process.umask(0o177);
    try {
      await this.app.listen({ path: socketPath });
      this.#socketPath = socketPath;
      chmodSync(socketPath, 0o600);
    } catch (e) {
      await this.app.close();
      throw bad(describeError(e));
    } finally {
      process.umask(old);
    }
  }

  async close(): Promise<void> {
    this.#machine?.kill();
    clearInterval(this.#metricsTimer);
    // As Firecracker: a last line on the way out, so that a short-lived VM's counters are not lost.
    if (this.#metrics && !this.#metrics.closed) {
      if (this.#machine) this.#flushMetrics('timer');
      this.#metrics.close();
    }
    this.#logFile?.close();
    await this.app.close();
    if (this.#socketPath && existsSync(this.#socketPath)) unlinkSync(this.#socketPath);
  }
}

/** A log line for a file that fails (a full disk) is dropped: logging must not fail what it reports. */
function tryWrite(file: OutputFile, line: string): void {
  try {
    file.write(line);
  } catch {
    file.dropped++;
  }
}

/** A host file named by an API field: it must exist and be a regular file, with something in it. */
function checkRegularFile(field: string, file: string): void {
  let st;
  try {
    st = statSync(file);
  } catch {
    throw fault(`${field} ${file}: no such file`);
  }
  if (!st.isFile()) throw fault(`${field} ${file}: not a regular file`);
  if (st.size === 0) throw fault(`${field} ${file}: the file is empty`);
}

/**
 * The library's messages name its inputs as the CLI does (`--kernel PATH: ...`, `raise --mem`); an
 * API client set them through fields, and is told those names instead.
 */
const API_NAMES: readonly [RegExp, string][] = [
  [/--kernel\b/g, 'kernel_image_path'],
  [/--initrd\b/g, 'initrd_path'],
  [/--cmdline\b/g, 'boot_args'],
  [/--mem\b/g, 'mem_size_mib'],
  [/--cpus\b/g, 'vcpu_count'],
];

/** Runs `fn`, rewording a VmmError it throws in the API's field names (same code). */
function inApiTerms<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof VmmError)) throw e;
    const message = API_NAMES.reduce((m, [flag, field]) => m.replace(flag, field), e.message);
    if (message === e.message) throw e;
    throw new VmmError(e.code, message, { cause: e });
  }
}
