import WebSocket from 'ws';

/** An open client socket and what came on it, as a test reads it. */
export interface OpenSocket {
  ws: WebSocket;
  /** The handshake's response headers. */
  headers: Record<string, string | string[] | undefined>;
  /** The next message (text as a string, binary as bytes); rejects when the socket closes first. */
  next(timeoutMs?: number): Promise<string | Buffer>;
  /** Sends `data` and waits for the answer. */
  ask(data: string | Buffer, timeoutMs?: number): Promise<string | Buffer>;
  /** Resolves with the close code and reason (1006: no close frame). */
  closed: Promise<{ code: number; reason: string }>;
}

/** What came back instead of `101 Switching Protocols`. */
export interface Refused {
  refused: true;
  status: number;
  body: string;
}

/**
 * Opens a WebSocket to `url` (127.0.0.1 only) with `headers` (a Host header to reach an app host),
 * or resolves with the HTTP answer that refused it.
 */
export function openSocket(url: string, opts: { headers?: Record<string, string>; protocols?: string[] } = {}): Promise<OpenSocket | Refused> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, opts.protocols ?? [], { headers: opts.headers });
    const queue: (string | Buffer)[] = [];
    const waiting: { resolve: (m: string | Buffer) => void; reject: (e: Error) => void }[] = [];
    let ended: { code: number; reason: string } | undefined;
    const closed = new Promise<{ code: number; reason: string }>((r) =>
      ws.on('close', (code, reason) => {
        ended = { code, reason: reason.toString() };
        for (const w of waiting.splice(0)) w.reject(new Error(`the socket closed (${code} ${ended.reason}) before a message came`));
        r(ended);
      }),
    );
    ws.on('message', (data, isBinary) => {
      const message = isBinary ? Buffer.from(data as Buffer) : data.toString();
      const w = waiting.shift();
      if (w) w.resolve(message);
      else queue.push(message);
    });
    const next = (timeoutMs = 5000) =>
      new Promise<string | Buffer>((res, rej) => {
        const queued = queue.shift();
        if (queued !== undefined) return res(queued);
        if (ended) return rej(new Error(`the socket closed (${ended.code} ${ended.reason}) before a message came`));
        const timer = setTimeout(() => rej(new Error(`no message within ${timeoutMs} ms`)), timeoutMs);
        waiting.push({ resolve: (m) => (clearTimeout(timer), res(m)), reject: (e) => (clearTimeout(timer), rej(e)) });
      });
    ws.on('upgrade', (res) => {
      ws.once('open', () => resolve({ ws, headers: res.headers, next, closed, ask: (data, timeoutMs) => (ws.send(data), next(timeoutMs)) }));
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ refused: true, status: res.statusCode!, body }));
      res.on('error', reject);
    });
    ws.on('error', (err) => {
      if (ws.readyState !== WebSocket.OPEN) reject(err);
    });
  });
}

/** An open socket, or the test fails naming what answered instead. */
export async function mustOpen(url: string, opts: Parameters<typeof openSocket>[1] = {}): Promise<OpenSocket> {
  const s = await openSocket(url, opts);
  if ('refused' in s) throw new Error(`the WebSocket was refused: HTTP ${s.status} ${s.body}`);
  return s;
}
