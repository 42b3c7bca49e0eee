import { describe, expect, it } from 'vitest';
import { validateAppConfig } from './validate-config.js';

describe('app config validation', () => {
  it('fills defaults for a minimal config', () => {
    expect(validateAppConfig({ name: 'api' })).toEqual({
      name: 'api',
      entry: 'index.ts',
      workers: 1,
      readiness: { path: '/', timeoutMs: 30_000 },
      env: {},
      resources: {},
      volumes: [],
      updatable: true,
      public: false,
      domains: [],
      rollout: { maxSurge: 1, maxUnavailable: 0, drainTimeoutMs: 30_000, stopGraceMs: 5_000 },
      hot: { canaryWindowMs: 1000, suspendTimeoutMs: 5000, maxRetainedModules: 2000, permanentAfterMs: 10_000 },
    });
  });

  it('takes domains as lower-case hostnames, each once, and names each bad one', () => {
    expect(validateAppConfig({ name: 'shop', domains: ['shop.example.com', 'www.shop.example.com'] }).domains).toEqual(['shop.example.com', 'www.shop.example.com']);
    expect(() => validateAppConfig({ name: 'shop', domains: ['Shop.example.com', 'https://x.io', 'localhost', 'a.io', 'a.io', 'x.io:80'] })).toThrow(
      /`domains\[0\]` is not a hostname \(got "Shop.example.com"\)[^]*`domains\[1\]` is not a hostname[^]*`domains\[2\]` is not a hostname[^]*`domains\[4\]` repeats a.io[^]*`domains\[5\]` is not a hostname/,
    );
    expect(() => validateAppConfig({ name: 'shop', domains: 'shop.example.com' })).toThrow(/`domains` must be a list of hostnames/);
  });

  it('accepts the seed resources and volume forms', () => {
    const spec = validateAppConfig({
      name: 'gpu-app',
      resources: { cpu: 2, memoryMb: 20480, gpu: 1, gpuConstraints: ['A100 40G', 'RTX 4090'] },
      volumes: [{ name: 'get-start-volume' }, { name: 'pinned', revision: '000001-08a' }],
    });
    expect(spec.resources).toEqual({ cpu: 2, memoryMb: 20480, gpu: 1, gpuConstraints: ['A100 40G', 'RTX 4090'] });
    expect(spec.volumes).toEqual([{ name: 'get-start-volume', useLatest: true }, { name: 'pinned', revision: '000001-08a' }]);
  });

  it('lists every problem with its field and fix', () => {
    let message = '';
    try {
      validateAppConfig({ name: 'x', entry: '../up.ts', resources: { cpu: 0, disk: 1 }, volumes: [{ name: 'v', revision: '1', useLatest: true }], env: { MOLT_X: 'y' } }, 'molt.config.ts');
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/^molt\.config\.ts is invalid:/);
    expect(message).toContain('`entry` must be a relative path inside the app directory');
    expect(message).toContain('`resources.cpu` must be a number of cores above 0');
    expect(message).toContain('`resources.disk` is not a known resource');
    expect(message).toContain('`volumes[0]` sets both revision and useLatest');
    expect(message).toContain('`env.MOLT_X` uses the MOLT_ prefix');
  });

  it('refuses a config that is not an object', () => {
    expect(() => validateAppConfig('name: x')).toThrow(/must be an object/);
  });
});
