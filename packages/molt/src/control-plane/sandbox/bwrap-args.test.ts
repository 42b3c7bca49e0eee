import { describe, expect, it } from 'vitest';
import { bwrapArgs } from './bwrap-args.js';

const spec = (runtime: string) => ({
  releaseDir: '/data/apps/ns/app/releases/r1',
  releasesDir: '/data/apps/ns/app/releases',
  volumes: [{ ref: 'team/models', path: '/data/trees/t1' }],
  runDir: '/data/run/w1',
  runtime: [`${runtime}/dist`, `${runtime}/package.json`],
  moltApp: `${runtime}/../app`,
  files: [],
  scratchBytes: 1024,
});

/** The index of an operation's mount point in the arguments. */
const at = (args: string[], op: string, dest: string) => args.findIndex((a, i) => a === dest && args[i - 1] !== undefined && args.slice(Math.max(0, i - 3), i).includes(op));

describe('sandbox mounts', () => {
  it('make every directory above a mount point 0755, after the mounts it lies in', () => {
    // A runtime under /tmp: its directories must be made inside the private /tmp, not under it.
    const args = bwrapArgs(spec('/tmp/clone/packages/molt'), 4);
    const tmpfs = at(args, '--tmpfs', '/tmp');
    const dir = at(args, '--dir', '/tmp/clone');
    expect(tmpfs).toBeGreaterThan(0);
    expect(dir).toBeGreaterThan(tmpfs);
    expect(args[dir - 2]).toBe('0755');
    expect(at(args, '--ro-bind', '/tmp/clone/packages/molt/dist')).toBeGreaterThan(at(args, '--dir', '/tmp/clone/packages/molt'));
    // /tmp itself keeps its sticky, world-writable mode: it is never made again with 0755.
    expect(args.filter((a, i) => a === '/tmp' && args[i - 1] === '--dir')).toEqual([]);
    // A shared volume's owner directory is made before the volume is bound into it.
    expect(at(args, '--dir', '/molt/volumes/team')).toBeLessThan(at(args, '--ro-bind', '/molt/volumes/team/models'));
  });

  it('make nothing under a directory bound from the host (it has its own)', () => {
    const args = bwrapArgs(spec('/usr/lib/node_modules/molt'), 4);
    expect(args.filter((a, i) => a.startsWith('/usr/') && args[i - 1] === '--dir')).toEqual([]);
  });
});
