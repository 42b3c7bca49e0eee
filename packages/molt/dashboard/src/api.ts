/** The public API, as the CLI calls it, with the session cookie instead of a bearer token. */
import { ApiError } from '../../src/cli/api-error.ts';

export { ApiError };

type Listener = () => void;
const signedOut = new Set<Listener>();
/** Called when any call finds the session gone (expired, revoked): the page shows the sign-in form. */
export function onSignedOut(fn: Listener): () => void {
  signedOut.add(fn);
  return () => signedOut.delete(fn);
}

async function failure(res: Response): Promise<ApiError> {
  let code = 'MOLT_ERR_HTTP';
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = (await res.json()) as { error?: { code: string; message: string } };
    if (body.error) ({ code, message } = body.error);
  } catch {
    // not JSON: the status says it
  }
  const err = new ApiError(res.status, code, message);
  if (res.status === 401) for (const fn of signedOut) fn();
  return err;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(`/api/v1${path}`, {
    method,
    credentials: 'same-origin',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw await failure(res);
  return (await res.json()) as T;
}

/** A release file (`molt release build --out FILE`) uploaded as it is. */
export async function uploadRelease<T>(namespace: string, file: Blob): Promise<T> {
  const res = await fetch(`/api/v1/namespaces/${encodeURIComponent(namespace)}/releases`, { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/x-tar' }, body: file });
  if (!res.ok) throw await failure(res);
  return (await res.json()) as T;
}

/**
 * Reads an NDJSON stream of the API (logs, a rollout's events) item by item until it ends or
 * `signal` aborts it. Resolves when the stream ends.
 */
export async function streamNdjson<T>(path: string, onItem: (item: T) => void, signal: AbortSignal): Promise<void> {
  const res = await fetch(`/api/v1${path}`, { credentials: 'same-origin', signal });
  if (!res.ok || !res.body) throw await failure(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    rest += value;
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (line.trim()) onItem(JSON.parse(line) as T);
    }
  }
}

export const enc = encodeURIComponent;
export const appPath = (ns: string, app: string) => `/namespaces/${enc(ns)}/apps/${enc(app)}`;
