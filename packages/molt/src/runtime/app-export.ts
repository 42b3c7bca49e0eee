import type { AppModule } from '@molt/app';

/**
 * The app an entry module default-exports: anything with a callable `fetch` (a plain object, a Hono
 * app, an itty-router Proxy). The export is read as a property, never awaited: a router whose every
 * property is a function, `then` included, looks like a promise that never settles.
 *
 * Otherwise it throws at once, naming the user's file (`index.ts`, not the compiled `index.js`) and
 * what was found there, with the change that makes it load. `code` (the compiled module) lets it
 * tell an app that starts its own server with `@hono/node-server` from one that exports nothing.
 */
export function appExport(mod: Record<string, unknown>, source: string, code = ''): AppModule {
  const app = mod.default as Record<string, unknown> | undefined;
  if ((typeof app === 'object' || typeof app === 'function') && app !== null && typeof app.fetch === 'function') return app as unknown as AppModule;
  throw new TypeError(`${source} ${found(mod, app, code)}; molt calls fetch(request) on the default export, e.g. \`export default app\` for a Hono app or \`export default { fetch: (req) => new Response('ok') }\``);
}

function found(mod: Record<string, unknown>, app: unknown, code: string): string {
  if (app === undefined) {
    if (/["']@hono\/node-server["']/.test(code) && /\bserve\s*\(/.test(code)) {
      return 'has no default export: it starts its own server with serve() from @hono/node-server, and molt runs the server itself; drop the serve() call and `export default app`';
    }
    if (typeof mod.fetch === 'function') return 'exports fetch by name but has no default export: write `export default { fetch }`';
    const names = Object.keys(mod);
    return `has no default export${names.length ? ` (it exports ${list(names)})` : ''}`;
  }
  if (app === null) return 'default-exports null';
  if (typeof app === 'function') {
    const name = app.name ? ` ${app.name}` : '';
    return app.length >= 2
      ? `default-exports a function${name} of (req, res), a Node request listener, not an object with fetch`
      : `default-exports a function${name}, not an object with fetch`;
  }
  if (typeof app !== 'object') return `default-exports the ${typeof app} ${(typeof app === 'string' ? JSON.stringify(app) : String(app)).slice(0, 60)}, not an object with fetch`;
  const a = app as Record<string, unknown>;
  if ('fetch' in a) return `default-exports an object whose fetch is ${a.fetch === null ? 'null' : typeof a.fetch}, not a function`;
  const keys = Object.keys(a);
  return `default-exports an object with no fetch method${keys.length ? ` (its keys: ${list(keys)})` : ''}`;
}

const list = (names: string[]) => (names.length > 8 ? `${names.slice(0, 8).join(', ')}, …` : names.join(', '));
