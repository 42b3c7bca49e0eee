import { Readable } from 'node:stream';
import { MoltError } from '../errors.js';
import { currentProfile } from './profile.js';
import { ApiError } from './api-error.js';

export { ApiError };

/**
 * The server URL as requests are built on it: it must be an http(s) URL; a trailing `/api/v1` (a
 * URL copied from an API call) is dropped, any other path is kept (molt behind a proxy's prefix).
 */
export function serverBase(server: string): string {
  let url: URL | undefined;
  try {
    url = new URL(server);
  } catch {
    // not a URL at all: said below
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    const guess = /^[\w.-]+:\d+/.test(server) || /^[\w.-]+$/.test(server) ? `; did you mean http://${server}?` : '; e.g. http://127.0.0.1:7070';
    throw new MoltError('MOLT_ERR_BAD_REQUEST', `the server address ${JSON.stringify(server)} is not an http(s) URL${guess} (set by MOLT_SERVER or \`molt login --server\`)`);
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, '').replace(/\/api\/v1$/, '')}`;
}

/** How long a read waits for a restarting control plane (503 MOLT_ERR_CONTROL_PLANE_DOWN) before it gives up. */
const RESTART_PATIENCE_MS = 30_000;
const IDEMPOTENT = new Set(['GET', 'HEAD']);

/** A thin client of the molt HTTP API. */
export class Client {
  constructor(
    readonly server: string,
    private readonly token: string | undefined,
  ) {}

  static fromProfile(): Client {
    const p = currentProfile();
    if (!p.server) {
      throw new MoltError('MOLT_ERR_UNAUTHENTICATED', 'no server configured; run `molt login --server URL --token TOKEN` or set MOLT_SERVER and MOLT_TOKEN');
    }
    return new Client(serverBase(p.server), p.token);
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.token ? { authorization: `Bearer ${this.token}` } : {}), ...extra };
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.send(method, path, body === undefined ? undefined : JSON.stringify(body), body === undefined ? {} : { 'content-type': 'application/json' });
    const text = await res.text();
    if (!text) return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(res.status, 'MOLT_ERR_NOT_MOLT', `the server at ${this.server} answered ${method} ${path} with something that is not JSON: it does not look like a molt server; check MOLT_SERVER or \`molt login --server\``);
    }
  }

  /**
   * Uploads a stream (a tar) and returns the JSON answer. It is piped into a plain `node:http`
   * request: for a large upload, web streams through `fetch` cost a third of the time.
   */
  async upload<T>(path: string, stream: Readable): Promise<T> {
    const url = new URL(`${this.server}${path}`);
    const { request } = url.protocol === 'https:' ? await import('node:https') : await import('node:http');
    const { status, text } = await new Promise<{ status: number; text: string }>((resolvePromise, reject) => {
      const req = request(url, { method: 'POST', headers: this.headers({ 'content-type': 'application/x-tar' }) }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolvePromise({ status: res.statusCode ?? 0, text }));
        res.on('error', reject);
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        // The server may answer (413, 400) and close before the whole upload is sent.
        if (err.code === 'EPIPE' || err.code === 'ECONNRESET') return;
        reject(new ApiError(0, 'MOLT_ERR_UNREACHABLE', `cannot reach the molt server at ${this.server} (${err.code ?? err.message}); is \`molt server\` running?`));
      });
      stream.on('error', (err) => req.destroy(err));
      stream.pipe(req);
    });
    if (status < 200 || status >= 300) throw this.apiError(status, text);
    return JSON.parse(text) as T;
  }

  /** POSTs JSON and returns the answer's body as a stream (a tar download). */
  async download(path: string, body: unknown): Promise<Readable> {
    const res = await this.send('POST', path, JSON.stringify(body), { 'content-type': 'application/json' });
    return Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
  }

  /** Calls `onItem` for each line of an NDJSON stream until it ends. */
  async stream<T>(path: string, onItem: (item: T) => void): Promise<void> {
    const res = await this.send('GET', path);
    let rest = '';
    const decoder = new TextDecoder();
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      const lines = (rest + decoder.decode(chunk, { stream: true })).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) if (line.trim()) onItem(JSON.parse(line) as T);
    }
  }

  private async send(method: string, path: string, body?: BodyInit, headers: Record<string, string> = {}): Promise<Response> {
    const giveUpAt = Date.now() + RESTART_PATIENCE_MS;
    for (;;) {
      let res: Response;
      try {
        res = await fetch(`${this.server}${path}`, { method, headers: this.headers(headers), body, duplex: 'half' } as RequestInit);
      } catch (err) {
        const cause = (err as { cause?: { code?: string } }).cause;
        throw new ApiError(0, 'MOLT_ERR_UNREACHABLE', `cannot reach the molt server at ${this.server} (${cause?.code ?? (err as Error).message}); is \`molt server\` running?`);
      }
      if (res.ok) return res;
      const err = this.apiError(res.status, await res.text());
      // The control plane restarts (the data plane said so, and kept the request from it): a read is
      // asked again after the Retry-After it gave, for a while. A change is not: it may have reached it.
      const wait = Number(res.headers.get('retry-after') ?? 1) * 1000;
      if (err.code !== 'MOLT_ERR_CONTROL_PLANE_DOWN' || !IDEMPOTENT.has(method) || Date.now() + wait > giveUpAt) throw err;
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  /**
   * The server's `{ error: { code, message } }` as an ApiError. Anything else (an HTML page, a
   * proxy's text) means the address is not molt's API: say so rather than print the page.
   */
  private apiError(status: number, text: string): ApiError {
    try {
      const parsed = JSON.parse(text) as { error?: { code: string; message: string } };
      if (parsed.error?.code) return new ApiError(status, parsed.error.code, parsed.error.message);
    } catch {
      // not JSON
    }
    const what = /^\s*</.test(text) ? 'an HTML page' : text ? `${text.length} bytes that are not a molt error` : 'an empty body';
    return new ApiError(status, 'MOLT_ERR_NOT_MOLT', `the server at ${this.server} answered HTTP ${status} with ${what}: it does not look like a molt server; check MOLT_SERVER or \`molt login --server\``);
  }
}
