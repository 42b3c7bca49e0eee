import { MoltError } from '../errors.js';

/**
 * Bounds how many uploads the server reads at once (each stages files and may hold up to 64 MiB of
 * small files in memory); the next ones wait their turn in a bounded queue, and past it get 503.
 */
export class UploadGate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly concurrency: number,
    private readonly maxWaiting = 64,
  ) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.concurrency) {
      if (this.waiting.length >= this.maxWaiting) {
        throw new MoltError('MOLT_ERR_BUSY', `the server is reading ${this.active} uploads and ${this.waiting.length} more wait; retry in a few seconds`);
      }
      await new Promise<void>((resolvePromise) => this.waiting.push(resolvePromise));
    } else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      // The slot passes to the next upload as it is; with none waiting it is freed.
      if (next) next();
      else this.active--;
    }
  }
}
