/**
 * The PCI host bridge at 00:00.0: class 06/00/00, with the vendor and device id Cloud Hypervisor
 * uses for its virtual host bridge (Intel 0x0d57), which Linux drives with no chipset quirks.
 */
import { PciConfigSpace } from './config-space.js';

export const HOST_BRIDGE_VENDOR = 0x8086;
export const HOST_BRIDGE_DEVICE = 0x0d57;

export function hostBridge(): PciConfigSpace {
  return PciConfigSpace.create({ vendorId: HOST_BRIDGE_VENDOR, deviceId: HOST_BRIDGE_DEVICE, classCode: 0x06_00_00 });
}
