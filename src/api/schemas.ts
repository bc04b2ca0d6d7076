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

export const machineConfigSchema = {
  type: 'object',
  required: ['vcpu_count', 'mem_size_mib'],
  additionalProperties: false,
  properties: {
    vcpu_count: { type: 'integer', minimum: 1, maximum: 32 },
    mem_size_mib: { type: 'integer', minimum: 1 },
    smt: { type: 'boolean' },
    track_dirty_pages: { type: 'boolean' },
    huge_pages: { type: 'string', enum: ['None', 'Transparent', '2M'] },
  },
} as const;

export const driveSchema = {
  type: 'object',
  required: ['drive_id', 'path_on_host', 'is_root_device'],
  additionalProperties: false,
  properties: {
    drive_id: { type: 'string', minLength: 1 },
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
    iface_id: { type: 'string', minLength: 1 },
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
