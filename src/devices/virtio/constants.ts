/** Virtio 1.x constants (OASIS virtio v1.2), named as in the specification. */

/** Device status bits (§2.1). */
export const VIRTIO_STATUS = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 0x40,
  FAILED: 0x80,
} as const;

/** Reserved feature bits (§6). */
export const VIRTIO_F = {
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
} as const;

/** Device ids (§5); the PCI device id is 0x1040 + id. */
export const VIRTIO_ID = { NET: 1, BLOCK: 2, CONSOLE: 3, RNG: 4, NINEP: 9 } as const;
export const VIRTIO_PCI_VENDOR = 0x1af4;
export const VIRTIO_PCI_DEVICE_BASE = 0x1040;

/** virtio_pci_common_cfg offsets (§4.1.4.3). */
export const COMMON_CFG = {
  device_feature_select: 0,
  device_feature: 4,
  driver_feature_select: 8,
  driver_feature: 12,
  config_msix_vector: 16,
  num_queues: 18,
  device_status: 20,
  config_generation: 21,
  queue_select: 22,
  queue_size: 24,
  queue_msix_vector: 26,
  queue_enable: 28,
  queue_notify_off: 30,
  queue_desc: 32,
  queue_driver: 40,
  queue_device: 48,
  SIZE: 56,
} as const;

/** "No vector" for config_msix_vector and queue_msix_vector (§4.1.5.1.2). */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

export const bit = (n: number): bigint => 1n << BigInt(n);
