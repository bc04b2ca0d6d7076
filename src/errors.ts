/**
 * Error vocabulary shared by the library and the CLI. Every error a user can cause carries a
 * stable `code` and a one-line message naming the problem (file, flag, value); the CLI prints the
 * message alone, without a stack trace.
 */

import { getSystemErrorName } from 'node:util';

/** A Node-style system error, as thrown by the addon: { code: 'EINVAL', errno: -22, syscall, ioctl }. */
export interface ErrnoError extends Error {
  code: string;
  errno: number;
  syscall?: string;
  ioctl?: string;
}

export function isErrno(e: unknown, code?: string): e is ErrnoError {
  return e instanceof Error && typeof (e as ErrnoError).errno === 'number' && (code === undefined || (e as ErrnoError).code === code);
}

/** The ErrnoError for a system call that returned -errno instead of throwing (the addon's hot paths). */
export function errnoError(errno: number, syscall: string): ErrnoError {
  const code = getSystemErrorName(-errno);
  return Object.assign(new Error(`${syscall} failed: ${code}`), { code, errno: -errno, syscall });
}

export type VmmErrorCode =
  | 'KVM_UNAVAILABLE'
  | 'KVM_PERMISSION'
  | 'KVM_API_VERSION'
  | 'KVM_CAPABILITY'
  | 'KVM_FAILURE'
  | 'BAD_CONFIG'
  | 'BAD_KERNEL'
  | 'MEMORY'
  | 'BUS'
  | 'GUEST_MEMORY'
  | 'INTERNAL';

/** An error with a stable code and a message fit to show a user as is. */
export class VmmError extends Error {
  override readonly name = 'VmmError';
  constructor(readonly code: VmmErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Formats any error as one line: the VmmError message, or `ioctl: message (CODE)` for native errors. */
export function describeError(e: unknown): string {
  if (e instanceof VmmError) return e.message;
  if (isErrno(e)) return e.message.includes(e.code) ? e.message : `${e.message} (${e.code})`;
  if (e instanceof Error) return e.message;
  return String(e);
}

/** Hex formatting for addresses in messages and logs. */
export const hex = (v: number | bigint): string => `0x${v.toString(16)}`;
