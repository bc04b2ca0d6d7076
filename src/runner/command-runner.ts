/**
 * Host side of `nodevisor run -- COMMAND`: speaks the runner protocol (protocol.ts) with nv-agent
 * over a channel, streams the command's stdout and stderr to the host's, feeds it the host's stdin,
 * and resolves with its exit status. Backpressure both ways: onGuestBytes() returns false while a
 * host sink is full (the virtio console then holds the guest's buffers) and 'resume' is emitted when
 * it drains; when send() returns false, stdin is paused until resumeInput().
 */
import { EventEmitter } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { FRAME, FrameDecoder, ProtocolError, encodeFrame, encodeRun, encodeStdin } from './protocol.js';

export interface CommandRunnerOptions {
  readonly argv: readonly string[];
  /** Working directory inside the guest ('' = the agent's own). */
  readonly cwd?: string;
  /**
   * Bytes to the guest's agent. Returning false (a full channel, as a stream's write()) pauses
   * stdin until resumeInput() is called.
   */
  readonly send: (bytes: Uint8Array) => boolean | void;
  readonly stdout: Writable;
  readonly stderr: Writable;
  /** The command's input; none means an empty stdin (EOF at once). */
  readonly stdin?: Readable;
}

export type RunnerEvent = 'ready' | 'output' | 'exit' | 'resume' | 'error';

export class CommandRunner extends EventEmitter {
  readonly #decoder = new FrameDecoder();
  #ready = false;
  #status: number | undefined;
  #blocked = 0;
  /** Bytes of output per stream, for --json timings and tests. */
  readonly bytes = { stdout: 0, stderr: 0 };
  readonly exited: Promise<number>;
  #resolve!: (status: number) => void;
  #reject!: (e: Error) => void;

  constructor(private readonly opts: CommandRunnerOptions) {
    super();
    this.exited = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.exited.catch(() => {}); // callers that only listen to events must not see an unhandled rejection
  }

  get ready(): boolean {
    return this.#ready;
  }

  get status(): number | undefined {
    return this.#status;
  }

  /** Bytes from the agent. Returns false when a host sink is full: stop reading until 'resume'. */
  onGuestBytes(bytes: Uint8Array): boolean {
    let frames;
    try {
      frames = this.#decoder.push(bytes);
    } catch (e) {
      this.#fail(e as Error);
      return true;
    }
    let ok = true;
    for (const f of frames) ok = this.#frame(f.type, f.payload) && ok;
    return ok;
  }

  #frame(type: number, payload: Buffer): boolean {
    switch (type) {
      case FRAME.HELLO:
        if (this.#ready) return true;
        this.#ready = true;
        this.emit('ready', payload.toString('utf8'));
        this.opts.send(encodeRun(this.opts.argv, this.opts.cwd ?? ''));
        this.#feedStdin();
        return true;
      case FRAME.STDOUT:
      case FRAME.STDERR: {
        const stream = type === FRAME.STDOUT ? 'stdout' : 'stderr';
        this.bytes[stream] += payload.length;
        this.emit('output', stream, payload);
        const sink = this.opts[stream];
        if (sink.write(Buffer.from(payload))) return true;
        this.#blocked++;
        sink.once('drain', () => {
          if (--this.#blocked === 0) this.emit('resume');
        });
        return false;
      }
      case FRAME.EXIT:
        if (payload.length !== 4) {
          this.#fail(new ProtocolError(`runner: EXIT frame of ${payload.length} bytes`));
          return true;
        }
        this.#status = payload.readInt32LE(0);
        this.#stopStdin();
        this.emit('exit', this.#status);
        this.#resolve(this.#status);
        return true;
      default:
        this.#fail(new ProtocolError(`runner: unexpected frame type ${type} from the agent`));
        return true;
    }
  }

  #feedStdin(): void {
    const input = this.opts.stdin;
    if (!input) {
      this.opts.send(encodeFrame(FRAME.STDIN_EOF));
      return;
    }
    const onData = (chunk: Buffer) => {
      let room = true;
      for (const f of encodeStdin(chunk)) room = this.opts.send(f) !== false && room;
      if (!room) input.pause();
    };
    this.#resumeInput = () => input.resume();
    const onEnd = () => this.opts.send(encodeFrame(FRAME.STDIN_EOF));
    input.on('data', onData);
    input.once('end', onEnd);
    input.once('error', onEnd);
    this.#stopStdin = () => {
      this.#resumeInput = () => {};
      input.off('data', onData);
      input.off('end', onEnd);
      input.off('error', onEnd);
      input.pause();
    };
  }

  /** The channel has room again after send() returned false: read stdin on. */
  resumeInput(): void {
    this.#resumeInput();
  }

  #resumeInput: () => void = () => {};

  /** The command has ended: the rest of the host's input has nowhere to go. */
  #stopStdin: () => void = () => {};

  #fail(e: Error): void {
    if (this.#status !== undefined) return;
    this.emit('error', e);
    this.#reject(e);
  }
}
