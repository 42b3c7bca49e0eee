import { execFile } from 'node:child_process';
import { availableParallelism, hostname, totalmem } from 'node:os';

/** One GPU as `nvidia-smi` reports it. */
export interface Gpu {
  index: number;
  uuid: string;
  name: string;
  memoryMb: number;
}

/** What a node can give workers. */
export interface NodeCapacity {
  name: string;
  cpu: number;
  memoryMb: number;
  gpus: Gpu[];
  /** How the GPUs were found, or why none were. */
  gpuSource: string;
}

const QUERY = ['--query-gpu=index,uuid,name,memory.total', '--format=csv,noheader,nounits'];

/** Parses `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`. */
export function parseNvidiaSmi(out: string): Gpu[] {
  const gpus: Gpu[] = [];
  for (const line of out.split('\n')) {
    if (!line.trim()) continue;
    const [index, uuid, name, memory] = line.split(',').map((s) => s.trim());
    if (index === undefined || !/^\d+$/.test(index) || !name || !memory || !/^\d+$/.test(memory)) {
      throw new Error(`unexpected nvidia-smi line: ${JSON.stringify(line)}`);
    }
    gpus.push({ index: Number(index), uuid: uuid ?? '', name, memoryMb: Number(memory) });
  }
  return gpus;
}

/** The GPUs on PATH's `nvidia-smi`; none (with the reason) when it is missing or fails. */
export function detectGpus(): Promise<{ gpus: Gpu[]; source: string }> {
  return new Promise((resolvePromise) => {
    execFile('nvidia-smi', QUERY, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        resolvePromise({ gpus: [], source: code === 'ENOENT' ? 'no nvidia-smi on PATH' : `nvidia-smi failed: ${(stderr || err.message).trim()}` });
        return;
      }
      try {
        resolvePromise({ gpus: parseNvidiaSmi(stdout), source: 'nvidia-smi' });
      } catch (parseErr) {
        resolvePromise({ gpus: [], source: (parseErr as Error).message });
      }
    });
  });
}

/** This machine's capacity: cores, memory and GPUs, each overridable (`--cpus`, `--memory-mb`). */
export async function detectNode(overrides: { cpu?: number; memoryMb?: number } = {}): Promise<NodeCapacity> {
  const { gpus, source } = await detectGpus();
  return {
    name: hostname(),
    cpu: overrides.cpu ?? availableParallelism(),
    memoryMb: overrides.memoryMb ?? Math.floor(totalmem() / 1024 / 1024),
    gpus,
    gpuSource: source,
  };
}

const tokens = (s: string) => s.toUpperCase().replace(/[^A-Z0-9]+/g, ' ').trim().split(' ').filter(Boolean);

/**
 * Whether a GPU is the model a constraint names: `"RTX 4090"` matches `NVIDIA GeForce RTX 4090`;
 * `"A100 40G"` matches an A100 with about 40 GB (a memory word like `40G`, `40GB` or `80GB` is
 * compared with the GPU's memory, within 10 %, so `A100 40G` does not take an 80 GB A100).
 */
export function gpuMatches(gpu: Gpu, constraint: string): boolean {
  const have = new Set(tokens(gpu.name));
  for (const word of tokens(constraint)) {
    const mem = /^(\d+)GB?$/.exec(word);
    if (mem) {
      const wantMb = Number(mem[1]) * 1024;
      if (Math.abs(gpu.memoryMb - wantMb) > wantMb * 0.1) return false;
    } else if (!have.has(word)) return false;
  }
  return true;
}
