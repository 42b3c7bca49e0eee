import { describe, expect, it } from 'vitest';
import { fitCookie, hostName, prefixLocation, underDomain } from './app-host.js';
import { parseRoute } from './gateway.js';
import { Sessions, safeNext, takeSessionCookie } from './sessions.js';
import type { TokenRow } from '../store/types.js';

describe('route paths', () => {
  it('split into namespace, app, the path the app sees and the prefix it is under', () => {
    expect(parseRoute('/api/routes/v1/default/get-start/sse')).toEqual({ namespace: 'default', app: 'get-start', path: '/sse', prefix: '/api/routes/v1/default/get-start' });
    expect(parseRoute('/api/routes/v1/ns/app/a/b?x=1')).toEqual({ namespace: 'ns', app: 'app', path: '/a/b?x=1', prefix: '/api/routes/v1/ns/app' });
    expect(parseRoute('/api/routes/v1/ns/app')).toEqual({ namespace: 'ns', app: 'app', path: '/', prefix: '/api/routes/v1/ns/app' });
    expect(parseRoute('/api/routes/v1/ns/app?q=1')).toEqual({ namespace: 'ns', app: 'app', path: '/?q=1', prefix: '/api/routes/v1/ns/app' });
    expect(parseRoute('/api/routes/v1/ns')).toBeUndefined();
    expect(parseRoute('/api/routes/v1//app/x')).toBeUndefined();
  });
});

describe('app hosts', () => {
  it('name an app by <app>.<namespace>.<domain> or <app>.<domain>, nothing deeper or shallower', () => {
    expect(hostName('Blog.Example.COM:7070')).toBe('blog.example.com');
    expect(hostName('blog.localhost.')).toBe('blog.localhost');
    expect(hostName('[::1]:7070')).toBeUndefined();
    const bases = ['apps.example.com', 'localhost'];
    expect(underDomain('blog.apps.example.com', bases)).toEqual({ namespace: 'default', app: 'blog' });
    expect(underDomain('blog.team.apps.example.com', bases)).toEqual({ namespace: 'team', app: 'blog' });
    expect(underDomain('blog.localhost', bases)).toEqual({ namespace: 'default', app: 'blog' });
    expect(underDomain('apps.example.com', bases)).toBeUndefined();
    expect(underDomain('a.b.c.apps.example.com', bases)).toBeUndefined();
    expect(underDomain('blogapps.example.com', bases)).toBeUndefined();
    expect(underDomain('example.com', bases)).toBeUndefined();
  });

  it('fit redirects to a path prefix once, leaving other origins alone', () => {
    const p = '/api/routes/v1/ns/app';
    expect(prefixLocation('/', p, 'h')).toBe(`${p}/`);
    expect(prefixLocation('/a?b=1', p, 'h')).toBe(`${p}/a?b=1`);
    expect(prefixLocation(`${p}/a`, p, 'h')).toBe(`${p}/a`);
    expect(prefixLocation(`${p}`, p, 'h')).toBe(p);
    expect(prefixLocation('/api/routes/v1/ns/apple', p, 'h')).toBe(`${p}/api/routes/v1/ns/apple`);
    expect(prefixLocation('//cdn.example.com/x', p, 'h')).toBe('//cdn.example.com/x');
    expect(prefixLocation('https://other.example.com/x', p, 'h')).toBe('https://other.example.com/x');
    expect(prefixLocation('http://h/x', p, 'h')).toBe(`http://h${p}/x`);
    expect(prefixLocation('http://h:7070', p, 'h')).toBe('http://h:7070');
    expect(prefixLocation('relative/x', p, 'h')).toBe('relative/x');
  });

  it('fit cookies: Domain always dropped, Path under the prefix', () => {
    const p = '/api/routes/v1/ns/app';
    expect(fitCookie('a=1', p)).toBe('a=1');
    expect(fitCookie('a=1; Path=/; HttpOnly', p)).toBe(`a=1; Path=${p}/; HttpOnly`);
    expect(fitCookie('a=1; path=/x', p)).toBe(`a=1; Path=${p}/x`);
    expect(fitCookie(`a=1; Path=${p}/x`, p)).toBe(`a=1; Path=${p}/x`);
    expect(fitCookie('a=1; Domain=example.com; Path=/', undefined)).toBe('a=1; Path=/');
    expect(fitCookie('a=1; domain=.example.com; Secure', p)).toBe('a=1; Secure');
  });
});

describe('browser sessions', () => {
  const token: TokenRow = { id: 'tok1', name: 't', namespace: 'default', role: 'invoker', hash: 'h', createdAt: '', revokedAt: null };
  const sessions = new Sessions({ key: Buffer.alloc(32, 7), ttlMs: 60_000 }, (id) => (id === token.id ? token : undefined));

  it('hold for their host until they expire or the token is revoked', () => {
    const now = Date.now();
    const value = sessions.issue('blog.localhost', token, now);
    expect(sessions.verify(value, 'blog.localhost', now)).toBe(token);
    expect(sessions.verify(value, 'shop.localhost', now)).toBeUndefined();
    expect(sessions.verify(value, 'blog.localhost', now + 61_000)).toBeUndefined();
    expect(sessions.verify(value.replace('tok1', 'tok2'), 'blog.localhost', now)).toBeUndefined();
    expect(sessions.verify(`${value}.x`, 'blog.localhost', now)).toBeUndefined();
    const other = new Sessions({ key: Buffer.alloc(32, 8), ttlMs: 60_000 }, () => token);
    expect(other.verify(value, 'blog.localhost', now)).toBeUndefined();
    token.revokedAt = new Date().toISOString();
    expect(sessions.verify(value, 'blog.localhost', now)).toBeUndefined();
  });

  it('are taken out of the Cookie header; a login goes on only to a path of its host', () => {
    expect(takeSessionCookie('a=1; molt_session=x.y.z; b=2')).toEqual({ session: 'x.y.z', rest: 'a=1; b=2' });
    expect(takeSessionCookie('__Host-molt_session=v')).toEqual({ session: 'v', rest: '' });
    for (const bad of ['//evil.example', 'https://evil.example', '/\\evil.example', 'x', '', null]) expect(safeNext(bad)).toBe('/');
    expect(safeNext('/post/1?x=2')).toBe('/post/1?x=2');
  });
});
