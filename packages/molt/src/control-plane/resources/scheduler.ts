import type { ResourceRequests } from '@molt/app';
import { type Gpu, gpuMatches, type NodeCapacity } from './node-info.js';

/** What one worker holds on its node. */
export interface Allocation {
  workerId: string;
  app: string;
  cpu: number;
  memoryMb: number;
  /** Indices of the GPUs it was given (its CUDA_VISIBLE_DEVICES). */
  gpus: number[];
}

export type Placement = { ok: true; allocation: Allocation } | { ok: false; reason: string };

export interface NodeUsage extends NodeCapacity {
  used: { cpu: number; memoryMb: number };
  allocations: Allocation[];
}

const fmt = (n: number) => String(Math.round(n * 100) / 100);

/**
 * Places workers where their CPU, memory and GPUs are free (one node: this machine). Requests that
 * leave a field out do not reserve it. A worker that cannot be placed waits (PENDING) until a
 * release frees enough, or its deadline passes.
 */
export class Scheduler {
  private readonly allocations = new Map<string, Allocation>();
  private waiters: (() => void)[] = [];

  constructor(readonly node: NodeCapacity) {}

  /** The GPUs a request may use: of an accepted model, not held by another worker. */
  private freeGpus(req: ResourceRequests): Gpu[] {
    const held = new Set([...this.allocations.values()].flatMap((a) => a.gpus));
    const constraints = req.gpuConstraints ?? [];
    return this.node.gpus.filter((g) => !held.has(g.index) && (constraints.length === 0 || constraints.some((c) => gpuMatches(g, c))));
  }

  /** Whether a request could ever fit this node, and if not why (checked before anything starts). */
  fits(req: ResourceRequests): string | undefined {
    if ((req.cpu ?? 0) > this.node.cpu) return `needs ${fmt(req.cpu!)} CPU, the node has ${fmt(this.node.cpu)}`;
    if ((req.memoryMb ?? 0) > this.node.memoryMb) return `needs ${req.memoryMb} MiB of memory, the node has ${this.node.memoryMb} MiB`;
    const gpu = req.gpu ?? 0;
    if (gpu > 0) {
      const constraints = req.gpuConstraints ?? [];
      const models = this.node.gpus.filter((g) => constraints.length === 0 || constraints.some((c) => gpuMatches(g, c)));
      if (models.length < gpu) {
        const have = this.node.gpus.length ? this.node.gpus.map((g) => `${g.name} (${g.memoryMb} MiB)`).join(', ') : `no GPUs (${this.node.gpuSource})`;
        return `needs ${gpu} GPU(s)${constraints.length ? ` of ${constraints.join(' or ')}` : ''}, the node has ${have}`;
      }
    }
    return undefined;
  }

  /** Reserves the request for a worker now, or says what is short. */
  place(workerId: string, app: string, req: ResourceRequests): Placement {
    const used = this.used();
    const cpu = req.cpu ?? 0;
    const memoryMb = req.memoryMb ?? 0;
    const short: string[] = [];
    if (cpu > 0 && used.cpu + cpu > this.node.cpu + 1e-9) short.push(`${fmt(cpu)} CPU (${fmt(this.node.cpu - used.cpu)} of ${fmt(this.node.cpu)} free)`);
    if (memoryMb > 0 && used.memoryMb + memoryMb > this.node.memoryMb) short.push(`${memoryMb} MiB memory (${this.node.memoryMb - used.memoryMb} of ${this.node.memoryMb} MiB free)`);
    const free = this.freeGpus(req);
    const gpu = req.gpu ?? 0;
    if (gpu > free.length) short.push(`${gpu} GPU(s)${req.gpuConstraints?.length ? ` of ${req.gpuConstraints.join(' or ')}` : ''} (${free.length} free)`);
    if (short.length > 0) return { ok: false, reason: `waiting for capacity: needs ${short.join(', ')}` };
    const allocation: Allocation = { workerId, app, cpu, memoryMb, gpus: free.slice(0, gpu).map((g) => g.index) };
    this.allocations.set(workerId, allocation);
    return { ok: true, allocation };
  }

  /** Frees what a worker held and lets waiting workers try again. */
  release(workerId: string): void {
    if (!this.allocations.delete(workerId)) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves at the next release (or after `ms`). */
  nextRelease(ms: number): Promise<void> {
    return new Promise((resolvePromise) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolvePromise();
      }
      this.waiters.push(done);
    });
  }

  usage(): NodeUsage {
    return { ...this.node, used: this.used(), allocations: [...this.allocations.values()] };
  }

  private used(): { cpu: number; memoryMb: number } {
    let cpu = 0;
    let memoryMb = 0;
    for (const a of this.allocations.values()) {
      cpu += a.cpu;
      memoryMb += a.memoryMb;
    }
    return { cpu, memoryMb };
  }
}
