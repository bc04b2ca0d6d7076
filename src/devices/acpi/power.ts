/**
 * Power control for a hardware-reduced ACPI machine (ACPI 6.x §4.8.3.7 sleep control and status
 * registers, FADT RESET_REG): the FADT points Linux here. Writing SLP_EN with SLP_TYP = S5 to the
 * sleep control register powers the machine off; writing RESET_VALUE to the reset register resets
 * it. Other sleep states are not supported (writes ignored).
 */
import { allOnes, type AccessSize, type BusDevice } from '../../bus/bus.js';

export const ACPI_POWER_PORT = 0x600;
export const ACPI_POWER_LEN = 4;
export const ACPI_SLEEP_CONTROL = ACPI_POWER_PORT;
export const ACPI_SLEEP_STATUS = ACPI_POWER_PORT + 1;
export const ACPI_RESET_REG = ACPI_POWER_PORT + 2;
export const ACPI_RESET_VALUE = 0x1;
/** SLP_TYP the DSDT's \_S5 package names. */
export const ACPI_S5_SLP_TYP = 5;

const SLP_EN = 1 << 5;
const SLP_TYP_SHIFT = 2;
const SLP_TYP_MASK = 0x7;
const WAK_STS = 1 << 7;

export interface AcpiPowerDeps {
  readonly onPowerOff: () => void;
  readonly onReset: () => void;
}

export class AcpiPower implements BusDevice {
  readonly debugLabel = 'acpi-power';
  constructor(private readonly deps: AcpiPowerDeps) {}

  read(offset: number, size: AccessSize): number {
    if (size !== 1) return allOnes(size);
    return offset === 1 ? WAK_STS : 0; // never asleep: "woken" as far as the guest can tell
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (size !== 1) return;
    if (offset === 0 && value & SLP_EN && ((value >> SLP_TYP_SHIFT) & SLP_TYP_MASK) === ACPI_S5_SLP_TYP) this.deps.onPowerOff();
    else if (offset === 2 && value === ACPI_RESET_VALUE) this.deps.onReset();
  }
}
