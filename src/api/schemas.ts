/**
 * JSON Schemas of the Firecracker API bodies nodevisor accepts (Firecracker's swagger definitions,
 * as far as our features go). Fastify validates requests with them; unknown fields are refused so
 * that a typo never silently configures nothing.
 */
export const bootSourceSchema = {
  type: 'object',
  required: ['kernel_image_path'],
  additionalProperties: false,
  properties: {
    kernel_image_path: { type: 'string', minLength: 1 },
    boot_args: { type: 'string' },
    initrd_path: { type: 'string', minLength: 1 },
  },
} as const;

const machineConfigProperties = {
  vcpu_count: { type: 'integer', minimum: 1, maximum: 32 },
  mem_size_mib: { type: 'integer', minimum: 1 },
  smt: { type: 'boolean' },
  track_dirty_pages: { type: 'boolean' },
  huge_pages: { type: 'string', enum: ['None', 'Transparent', '2M'] },
  // Deprecated in Firecracker; scripts still send "None", the only value without a CPU template.
  cpu_template: { type: 'string' },
} as const;

export const machineConfigSchema = {
  type: 'object',
  required: ['vcpu_count', 'mem_size_mib'],
  additionalProperties: false,
  properties: machineConfigProperties,
} as const;

/** PATCH /machine-config: any subset of the fields PUT takes. */
export const machineConfigPatchSchema = {
  type: 'object',
  additionalProperties: false,
  properties: machineConfigProperties,
} as const;

/** PUT /logger. `level` is case-insensitive in Firecracker, so it is checked by the handler. */
export const loggerSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    log_path: { type: 'string', minLength: 1 },
    level: { type: 'string' },
    show_level: { type: 'boolean' },
    show_log_origin: { type: 'boolean' },
    module: { type: 'string' },
  },
} as const;

export const metricsSchema = {
  type: 'object',
  required: ['metrics_path'],
  additionalProperties: false,
  properties: { metrics_path: { type: 'string', minLength: 1 } },
} as const;

/** PUT /entropy: virtio-rng. A rate limiter is refused by the handler with its own message. */
export const entropySchema = {
  type: 'object',
  additionalProperties: false,
  properties: { rate_limiter: { type: 'object' } },
} as const;

export const driveSchema = {
  type: 'object',
  required: ['drive_id', 'path_on_host', 'is_root_device'],
  additionalProperties: false,
  properties: {
    // As Firecracker: letters, digits and '_' (ids name metrics groups and, cut to 20 bytes, serials).
    drive_id: { type: 'string', pattern: '^[A-Za-z0-9_]{1,64}$' },
    path_on_host: { type: 'string', minLength: 1 },
    is_root_device: { type: 'boolean' },
    is_read_only: { type: 'boolean' },
    partuuid: { type: 'string' },
    cache_type: { type: 'string', enum: ['Unsafe', 'Writeback'] },
    io_engine: { type: 'string', enum: ['Sync', 'Async'] },
  },
} as const;

export const networkInterfaceSchema = {
  type: 'object',
  required: ['iface_id', 'host_dev_name'],
  additionalProperties: false,
  properties: {
    iface_id: { type: 'string', pattern: '^[A-Za-z0-9_]{1,64}$' },
    host_dev_name: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,15}$' },
    guest_mac: { type: 'string', pattern: '^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$' },
    mtu: { type: 'integer', minimum: 68, maximum: 65535 },
  },
} as const;

export const actionSchema = {
  type: 'object',
  required: ['action_type'],
  additionalProperties: false,
  properties: { action_type: { type: 'string', enum: ['FlushMetrics', 'InstanceStart', 'SendCtrlAltDel'] } },
} as const;

export const vmStateSchema = {
  type: 'object',
  required: ['state'],
  additionalProperties: false,
  properties: { state: { type: 'string', enum: ['Paused', 'Resumed'] } },
} as const;
