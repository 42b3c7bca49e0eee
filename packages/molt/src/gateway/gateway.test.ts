import { describe, expect, it } from 'vitest';
import { parseRoute } from './gateway.js';

describe('route paths', () => {
  it('split into namespace, app and the path the app sees', () => {
    expect(parseRoute('/api/routes/v1/default/get-start/sse')).toEqual({ namespace: 'default', app: 'get-start', path: '/sse' });
    expect(parseRoute('/api/routes/v1/ns/app/a/b?x=1')).toEqual({ namespace: 'ns', app: 'app', path: '/a/b?x=1' });
    expect(parseRoute('/api/routes/v1/ns/app')).toEqual({ namespace: 'ns', app: 'app', path: '/' });
    expect(parseRoute('/api/routes/v1/ns/app?q=1')).toEqual({ namespace: 'ns', app: 'app', path: '/?q=1' });
    expect(parseRoute('/api/routes/v1/ns')).toBeUndefined();
    expect(parseRoute('/api/routes/v1//app/x')).toBeUndefined();
  });
});
