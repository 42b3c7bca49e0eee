import type { FastifyInstance } from 'fastify';
import { describeIsolation } from '../sandbox/isolation.js';
import { type ApiContext, principal } from './context.js';

export function nodeRoutes(api: FastifyInstance, { cp }: ApiContext): void {
  // Capacity, use and GPUs per node; which app holds what is shown only to the server admin.
  api.get('/nodes', async (req) => {
    const p = principal(req);
    const usage = cp.supervisor.scheduler.usage();
    const cgroups = cp.supervisor.cgroups;
    const node = {
      name: usage.name,
      cpu: usage.cpu,
      memoryMb: usage.memoryMb,
      used: usage.used,
      workers: usage.allocations.length,
      gpus: usage.gpus.map((g) => {
        const holder = usage.allocations.find((a) => a.gpus.includes(g.index));
        return { ...g, usedBy: holder ? (p.namespace === '*' || holder.app.startsWith(`${p.namespace}/`) ? holder.app : 'another namespace') : null };
      }),
      gpuSource: usage.gpuSource,
      limits: cgroups.mode.version ? `enforced (cgroup ${cgroups.mode.version})` : `not enforced: ${cgroups.unenforcedReason}`,
      isolation: describeIsolation(cp.opts.isolation),
    };
    return { nodes: [node] };
  });
}
