/**
 * Module loader hooks registered in every worker. `@molt/app` resolves to the runtime's own
 * copy, whatever copy the app bundled, so there is one copy of its state and types per worker.
 * During a hot upgrade, modules of the new release that neither changed nor import a changed
 * module resolve to the instances already running (redirects sent by the upgrader).
 */
import type { MessagePort } from 'node:worker_threads';

interface ResolveContext {
  parentURL?: string;
  conditions: string[];
}
type NextResolve = (specifier: string, context: ResolveContext) => Promise<{ url: string }>;

let moltAppUrl = '';
/** Release directory URL (with a trailing slash) → module path in it → the URL to use instead. */
const redirects = new Map<string, Record<string, string>>();

export function initialize(data: { moltAppUrl: string; port?: MessagePort }): void {
  moltAppUrl = data.moltAppUrl;
  data.port?.on('message', (m: { id: number; dirUrl: string; map: Record<string, string> }) => {
    redirects.set(m.dirUrl, m.map);
    data.port!.postMessage({ id: m.id });
  });
  data.port?.unref();
}

export async function resolve(specifier: string, context: ResolveContext, next: NextResolve): Promise<{ url: string; shortCircuit?: boolean }> {
  if (specifier === '@molt/app') return { url: moltAppUrl, shortCircuit: true };
  const resolved = await next(specifier, context);
  for (const [dirUrl, map] of redirects) {
    if (!resolved.url.startsWith(dirUrl)) continue;
    const to = map[resolved.url.slice(dirUrl.length)];
    if (to) return { url: to, shortCircuit: true };
  }
  return resolved;
}
