import { Agent, type IncomingMessage, request, type ServerResponse } from 'node:http';
import { errorResponse, MoltError } from '../errors.js';

/** Request headers of one hop, not passed to the control plane. */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade']);
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS']);

export interface ApiProxyOptions {
  /** The control plane's HTTP socket. */
  socketPath: string;
  /** API requests that may wait while the control plane is down; past it, 503 at once. */
  maxWaiting: number;
  /** How long one waits before 503 with Retry-After. */
  waitMs: number;
}

/**
 * Passes API requests (everything outside the route prefix) to the control plane over its local
 * socket. While the control plane is down (crashed and being restarted, or replaced) a request
 * waits in a short bounded queue for it to come back, then gets 503 with `Retry-After`; gateway
 * requests never pass here.
 */
export class ApiProxy {
  private readonly agent: Agent;
  private up = false;
  private readonly waiters = new Set<() => void>();

  constructor(private readonly opts: ApiProxyOptions) {
    this.agent = new Agent({ keepAlive: true, maxSockets: 64 });
  }

  /** The control plane answers (true) or is gone (false). */
  setUp(up: boolean): void {
    this.up = up;
    if (!up) {
      // Its connections went with it.
      this.agent.destroy();
      return;
    }
    // Each leaves the queue itself.
    for (const w of [...this.waiters]) w();
  }

  /** Set while the control plane stands by: who leads, for the 503 every API request gets meanwhile. */
  standby?: string;

  handle(req: IncomingMessage, res: ServerResponse): void {
    if (this.standby !== undefined) return this.refuse(res, new MoltError('MOLT_ERR_STANDBY', `this molt server stands by: ${this.standby}; send API requests to the leader, or wait for this one to take the lead`), 5);
    if (this.up) this.forward(req, res, false);
    else this.wait(req, res, false);
  }

  private wait(req: IncomingMessage, res: ServerResponse, retried: boolean): void {
    if (this.waiters.size >= this.opts.maxWaiting) return this.unavailable(res, `${this.waiters.size} API requests already wait for it`);
    /** Leaves the queue once: forwarded when the control plane is back, or 503 at the deadline. */
    const settle = (back: boolean) => {
      if (!this.waiters.delete(go)) return;
      clearTimeout(timer);
      if (!back) this.unavailable(res, `it did not come back within ${this.opts.waitMs} ms`);
      else if (!res.destroyed) this.forward(req, res, retried);
    };
    const go = () => settle(true);
    const timer = setTimeout(() => settle(false), this.opts.waitMs);
    this.waiters.add(go);
  }

  private unavailable(res: ServerResponse, why: string): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    this.refuse(res, new MoltError('MOLT_ERR_CONTROL_PLANE_DOWN', `the control plane is restarting (${why}); apps keep serving; retry shortly`), 1);
  }

  private refuse(res: ServerResponse, err: MoltError, retryAfterS: number): void {
    const { status, body } = errorResponse(err);
    const payload = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), 'retry-after': String(retryAfterS) }).end(payload);
  }

  private forward(req: IncomingMessage, res: ServerResponse, retried: boolean): void {
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP.has(k)) headers[k] = v;
    headers['x-forwarded-for'] = req.socket.remoteAddress ?? '';
    // Whether the client's connection is TLS: the dashboard's session cookie is Secure then.
    headers['x-forwarded-proto'] = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
    const bodiless = IDEMPOTENT.has(req.method ?? '') && !req.headers['content-length'] && !req.headers['transfer-encoding'];
    let answered = false;
    /** The rest of the client's body goes nowhere: read and dropped. */
    const dropRest = () => {
      req.unpipe(upstream);
      req.resume();
    };
    const upstream = request({ socketPath: this.opts.socketPath, agent: this.agent, method: req.method, path: req.url, headers }, (answer) => {
      answered = true;
      const out: string[] = [];
      const raw = answer.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) if (!HOP.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
      // Answered before the whole body arrived (a refused upload): the rest is read and dropped, so
      // the client gets the answer, and its connection closes after it.
      if (!req.complete && !bodiless) {
        out.push('connection', 'close');
        dropRest();
        // The control plane reads and drops what it did not take; this connection to it is not reused.
        answer.once('end', () => upstream.destroy());
      }
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage, out);
      // Streams (events, logs) flow as they come.
      res.flushHeaders();
      answer.pipe(res);
      answer.on('error', () => res.destroy());
      answer.on('aborted', () => res.destroy());
    });
    upstream.on('error', () => {
      // After its answer (a refused upload it stopped reading): the answer stands.
      if (answered) return;
      if (res.headersSent) return res.destroy();
      // It went away before answering: a request without a body can be sent again once it is back.
      if (bodiless && !retried) return this.wait(req, res, true);
      // Part of the body went to it: the rest is dropped and the connection closes after the answer.
      res.setHeader('connection', 'close');
      dropRest();
      this.unavailable(res, 'it went away during the request');
    });
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    if (bodiless) upstream.end();
    else req.pipe(upstream);
  }
}
