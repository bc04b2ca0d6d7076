/**
 * The command-runner protocol between nodevisor and nv-agent (guests/kit/agent/nv-agent.c), over
 * a byte channel (a virtio-console port). Frames: type (1 byte), payload length (u32 LE), payload.
 * The agent says HELLO when it is ready; the host sends RUN (cwd and argv, NUL-terminated), then
 * STDIN data and STDIN_EOF; the agent streams STDOUT and STDERR and ends with EXIT (i32 LE status:
 * the exit code, or 128 + the signal number).
 */
/**
 * The name of the virtio-serial port the agent talks on (a generic port, not a console: see
 * devices/virtio/console.ts). The kit's init finds the port by this name.
 */
export const AGENT_PORT_NAME = 'org.nodevisor.agent';

export const FRAME = { HELLO: 1, RUN: 2, STDIN: 3, STDIN_EOF: 4, STDOUT: 5, STDERR: 6, EXIT: 7 } as const;
export const FRAME_HEADER = 5;
/** The agent refuses frames longer than this; the host splits stdin to stay under it. */
export const MAX_HOST_PAYLOAD = 1 << 20;
/** What the host accepts from the agent in one frame (the agent sends at most 64 KiB). */
export const MAX_AGENT_PAYLOAD = 1 << 20;

export function encodeFrame(type: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + payload.length);
  out[0] = type;
  out.writeUInt32LE(payload.length, 1);
  out.set(payload, FRAME_HEADER);
  return out;
}

/** RUN's payload: "cwd\0arg0\0arg1\0...". */
export function encodeRun(argv: readonly string[], cwd = ''): Buffer {
  if (argv.length === 0) throw new Error('runner: no command');
  const parts = [cwd, ...argv];
  for (const p of parts) if (p.includes('\0')) throw new Error(`runner: argument contains a NUL byte: ${JSON.stringify(p)}`);
  return encodeFrame(FRAME.RUN, Buffer.from(parts.map((p) => `${p}\0`).join(''), 'utf8'));
}

/** STDIN frames for `data`, each under the agent's limit. */
export function encodeStdin(data: Uint8Array): Buffer[] {
  const frames: Buffer[] = [];
  for (let at = 0; at < data.length; at += MAX_HOST_PAYLOAD) frames.push(encodeFrame(FRAME.STDIN, data.subarray(at, at + MAX_HOST_PAYLOAD)));
  return frames;
}

export class ProtocolError extends Error {}

/** Reassembles frames from a byte stream; push() returns the frames completed by the new bytes. */
export class FrameDecoder {
  #buf: Buffer = Buffer.alloc(0);

  push(chunk: Uint8Array): { type: number; payload: Buffer }[] {
    this.#buf = this.#buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#buf, chunk]);
    const frames: { type: number; payload: Buffer }[] = [];
    while (this.#buf.length >= FRAME_HEADER) {
      const type = this.#buf[0]!;
      const len = this.#buf.readUInt32LE(1);
      if (type < FRAME.HELLO || type > FRAME.EXIT) throw new ProtocolError(`runner: unknown frame type ${type}`);
      if (len > MAX_AGENT_PAYLOAD) throw new ProtocolError(`runner: frame of ${len} bytes is too long`);
      if (this.#buf.length < FRAME_HEADER + len) break;
      frames.push({ type, payload: this.#buf.subarray(FRAME_HEADER, FRAME_HEADER + len) });
      this.#buf = this.#buf.subarray(FRAME_HEADER + len);
    }
    return frames;
  }

  /** Bytes of an incomplete frame still waiting. */
  get pending(): number {
    return this.#buf.length;
  }
}
