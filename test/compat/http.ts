import { request } from 'node:http';

export interface HostResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * One request to the server's port with the Host header a browser would send for `host` (no DNS:
 * the connection goes to 127.0.0.1 either way).
 */
export function hostRequest(serverUrl: string, host: string, path: string, opts: { method?: string; headers?: Record<string, string | string[]>; body?: string } = {}): Promise<HostResponse> {
  const url = new URL(serverUrl);
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: url.port, path, method: opts.method ?? 'GET', headers: { host: `${host}:${url.port}`, ...opts.headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}
