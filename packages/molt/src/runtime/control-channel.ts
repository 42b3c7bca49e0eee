import type { Duplex } from 'node:stream';

/** The fd a worker finds its control channel on (the server passes a socket there). */
export const CONTROL_FD = 3;

/**
 * The control channel between the server and a worker: one JSON message per line over a socket,
 * each at most `maxLength` characters. It replaces Node's IPC channel, which buffers a message of any size: a
 * worker is app code, and must not be able to fill the server's memory by never sending a newline.
 * A peer that sends a line over the limit, or one that is not JSON, is cut off.
 */
export class ControlChannel<In, Out> {
  private buffer = '';
  private closed = false;

  constructor(
    private readonly socket: Duplex,
    private readonly onMessage: (message: In) => void,
    /** Called once, when the peer is gone or was cut off (with the reason). */
    private readonly onClose: (reason?: string) => void,
    /** The longest line taken from the peer; it may be raised once the peer is trusted. */
    public maxLength: number,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.read(chunk));
    socket.on('end', () => this.close());
    socket.on('close', () => this.close());
    socket.on('error', () => this.close());
  }

  get open(): boolean {
    return !this.closed;
  }

  /** Sends a message; false when the channel is closed. */
  send(message: Out): boolean {
    if (this.closed) return false;
    this.socket.write(`${JSON.stringify(message)}\n`);
    return true;
  }

  /** Closes the channel (the peer sees it end). */
  close(reason?: string): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.onClose(reason);
  }

  private read(chunk: string): void {
    if (this.closed) return;
    this.buffer += chunk;
    for (let nl = this.buffer.indexOf('\n'); nl >= 0; nl = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      let message: In;
      try {
        message = JSON.parse(line) as In;
      } catch {
        this.close('it sent a control message that is not JSON');
        return;
      }
      this.onMessage(message);
      if (this.closed) return;
    }
    if (this.buffer.length > this.maxLength) this.close(`it sent a control message longer than ${this.maxLength} characters`);
  }
}
