/**
 * Module loader hooks for `molt app run`: `@molt/app` resolves to the runtime's own copy, whatever
 * copy the app installed, so there is one copy of its state and types per worker. (Server workers
 * find the runtime's copy by plain resolution and register no hooks.)
 */
interface ResolveContext {
  parentURL?: string;
  conditions: string[];
}
type NextResolve = (specifier: string, context: ResolveContext) => Promise<{ url: string }>;

let moltAppUrl = '';
const SUBPATHS = new Set(['@molt/app/hono']);

export function initialize(data: { moltAppUrl: string }): void {
  moltAppUrl = data.moltAppUrl;
}

export async function resolve(specifier: string, context: ResolveContext, next: NextResolve): Promise<{ url: string; shortCircuit?: boolean }> {
  if (specifier === '@molt/app') return { url: moltAppUrl, shortCircuit: true };
  // Its subpaths (`@molt/app/hono`) are files beside its entry.
  if (SUBPATHS.has(specifier)) return { url: new URL(`./${specifier.slice('@molt/app/'.length)}.js`, moltAppUrl).href, shortCircuit: true };
  return next(specifier, context);
}
