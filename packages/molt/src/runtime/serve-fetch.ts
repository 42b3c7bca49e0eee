import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AppModule } from '@molt/app';
import { lazyRequest, plainResponse } from './web-objects.js';

/** The one indirection between the socket and the app: a hot upgrade swaps `app`. */
export interface AppSlot {
  app: AppModule;
}

/**
 * The symbol under which Node's `Response` keeps its state, if this Node has one. A body made
 * from a string or bytes keeps that `source` there; writing it directly skips the stream
 * machinery (~30 µs a request). Detected once; if Node's internals change, the stream path serves.
 */
const STATE = Object.getOwnPropertySymbols(new Response('')).find((s) => s.description === 'state');

/** The string or bytes a response body was made from, when it can be written whole. */
function bodySource(response: Response): string | Uint8Array | undefined {
  if (!STATE || response.bodyUsed) return undefined;
  const body = (response as unknown as Record<symbol, { body?: { source?: unknown; stream?: ReadableStream } | null }>)[STATE]?.body;
  if (!body || body.stream?.locked) return undefined;
  const source = body.source;
  return typeof source === 'string' || source instanceof Uint8Array ? source : undefined;
}

/** Headers as Node writes them, `[name, value, …]`, each Set-Cookie its own pair (never joined). */
export function flatHeaders(headers: Headers): string[] {
  const flat: string[] = [];
  headers.forEach((value, name) => {
    if (name !== 'set-cookie') flat.push(name, value);
  });
  for (const cookie of headers.getSetCookie()) flat.push('set-cookie', cookie);
  return flat;
}

/**
 * Writes a web `Response` to a Node response. Each chunk is written as the app produces it,
 * so server-sent events flow one by one; writing waits for `drain` when the client is slow.
 */
export async function writeResponse(res: ServerResponse, response: Response): Promise<void> {
  const plain = plainResponse(response);
  if (plain) {
    res.writeHead(plain.status, plain.statusText, plain.headers);
    res.end(plain.body ?? undefined);
    return;
  }
  const headers = flatHeaders(response.headers);
  const source = bodySource(response);
  if (source !== undefined) {
    if (!response.headers.has('content-length')) headers.push('content-length', String(typeof source === 'string' ? Buffer.byteLength(source) : source.byteLength));
    res.writeHead(response.status, response.statusText || undefined, headers);
    res.end(source);
    return;
  }
  res.writeHead(response.status, response.statusText || undefined, headers);
  const body = response.body;
  if (!body) {
    res.end();
    return;
  }
  const reader = body.getReader();
  const onClose = () => void reader.cancel().catch(() => {});
  res.once('close', onClose);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (res.destroyed) break;
      if (!res.write(value)) {
        await new Promise<void>((resolvePromise) => {
          const go = () => {
            res.off('drain', go);
            res.off('close', go);
            resolvePromise();
          };
          res.on('drain', go);
          res.on('close', go);
        });
      }
    }
    res.end();
  } finally {
    res.off('close', onClose);
  }
}

/** The request handler of a worker: every request goes through `slot.app.fetch`. */
export function fetchHandler(slot: AppSlot, onError: (err: unknown) => void, isDraining: () => boolean = () => false) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    // A draining worker tells keep-alive clients to reconnect elsewhere.
    if (isDraining()) res.shouldKeepAlive = false;
    let request: Request;
    try {
      request = lazyRequest(req, res);
    } catch (err) {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'MOLT_ERR_BAD_REQUEST', message: String(err) } }));
      return;
    }
    Promise.resolve()
      .then(() => slot.app.fetch(request))
      .then((response) => {
        if (!(response instanceof Response)) throw new TypeError(`fetch() returned ${typeof response}, not a Response`);
        return writeResponse(res, response);
      })
      .catch((err) => {
        onError(err);
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: { code: 'MOLT_ERR_APP', message: 'the app threw while handling this request; see `molt app logs`' } }));
        } else res.destroy(err instanceof Error ? err : new Error(String(err)));
      });
  };
}
