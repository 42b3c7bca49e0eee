import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { assertSafeTree, resolveInTree, scanTree, treeHash, unsafePathReason } from './tree.js';

const dir = () => mkdtempSync(join(tmpdir(), 'molt-tree-'));

describe('trees', () => {
  it('hash the same for the same content, whatever the order files were read in', async () => {
    const a = dir();
    writeFileSync(join(a, 'b.txt'), 'B');
    writeFileSync(join(a, 'a.txt'), 'A');
    const b = dir();
    writeFileSync(join(b, 'a.txt'), 'A');
    writeFileSync(join(b, 'b.txt'), 'B');
    expect(treeHash((await scanTree(a)).tree)).toBe(treeHash((await scanTree(b)).tree));
    writeFileSync(join(b, 'b.txt'), 'changed');
    expect(treeHash((await scanTree(a)).tree)).not.toBe(treeHash((await scanTree(b)).tree));
  });

  it('keep links that stay inside and refuse links that leave the directory', async () => {
    const d = dir();
    mkdirSync(join(d, 'lib'));
    writeFileSync(join(d, 'lib', 'x.js'), 'x');
    symlinkSync('lib/x.js', join(d, 'inside'));
    const { tree } = await scanTree(d);
    expect(tree.entries.find((e) => e.path === 'inside')).toEqual({ path: 'inside', type: 'symlink', target: 'lib/x.js' });
    symlinkSync('/etc/passwd', join(d, 'outside'));
    await expect(scanTree(d)).rejects.toThrow(/outside.* is a link to \/etc\/passwd, outside/);
  });

  it('refuse FIFOs and devices', async () => {
    const d = dir();
    execFileSync('mkfifo', [join(d, 'pipe')]);
    await expect(scanTree(d)).rejects.toThrow(/is a device, FIFO or socket/);
  });

  it('name why a path is unsafe', () => {
    expect(unsafePathReason('a/b.js')).toBeUndefined();
    expect(unsafePathReason('../x')).toBe('contains ".."');
    expect(unsafePathReason('/x')).toBe('is absolute');
    expect(unsafePathReason('C:/x')).toBe('is absolute');
    expect(unsafePathReason('a\\..\\x')).toBe('contains a backslash');
    expect(unsafePathReason('a//b')).toBe('has an empty or "." segment');
    expect(unsafePathReason('./a')).toBe('has an empty or "." segment');
  });

  it('refuse uploaded trees with duplicate paths or unknown entry types', () => {
    const f = { path: 'a', type: 'file', hash: 'a'.repeat(64), size: 1 };
    expect(() => assertSafeTree({ entries: [f, f] })).toThrow(/appears twice/);
    expect(() => assertSafeTree({ entries: [{ path: 'dev', type: 'device' }] })).toThrow(/has type "device"/);
  });

  it('resolve links through the tree\'s own links, as the kernel would, and find a chain that climbs out', () => {
    const links = new Map([
      ['a', '.'],
      ['b', 'a/..'],
      ['d', 'sub'],
      ['x', 'd/../y'],
      ['loop1', 'loop2'],
      ['loop2', 'loop1'],
    ]);
    expect(resolveInTree('x', links)).toEqual({ path: 'y' });
    expect(resolveInTree('d/file', links)).toEqual({ path: 'sub/file' });
    expect(resolveInTree('b', links)).toEqual({ escapes: 'goes above the root of the tree' });
    expect(resolveInTree('loop1', links)).toEqual({ escapes: 'follows more than 40 links (a loop)' });
  });

  it('refuse trees whose entries conflict or lie under a link, naming them', () => {
    const file = (path: string) => ({ path, type: 'file', hash: 'a'.repeat(64), size: 1 });
    expect(() => assertSafeTree({ entries: [file('x'), file('x/y')] })).toThrow('tree entries x and x/y conflict');
    expect(() => assertSafeTree({ entries: [{ path: 'd', type: 'symlink', target: 'sub' }, file('d/x')] })).toThrow('tree entry d/x lies under the link d -> sub');
    expect(() => assertSafeTree({ entries: [{ path: 'a', type: 'symlink', target: '.' }, { path: 'b', type: 'symlink', target: 'a/..' }] })).toThrow(/link b -> a\/\.\. goes above the root/);
    expect(() => assertSafeTree({ entries: [{ path: 'ok', type: 'symlink', target: 'lib/x.js' }, file('lib/x.js')] })).not.toThrow();
  });
});
