/**
 * Hono's `upgradeWebSocket` helper on molt, as `hono/deno` and `hono/bun` give it on theirs:
 *
 * ```ts
 * import { Hono } from 'hono';
 * import { upgradeWebSocket } from '@molt/app/hono';
 *
 * const app = new Hono();
 * app.get('/ws', upgradeWebSocket(() => ({
 *   onMessage(event, ws) {
 *     ws.send(`echo: ${event.data}`);
 *   },
 * })));
 * export default app;
 * ```
 *
 * It needs nothing of Hono at run time (the app's own Hono calls it), so it works with any Hono 4.
 */
import type { Context, MiddlewareHandler } from 'hono';
import type { UpgradeWebSocket, WSContext, WSEvents, WSReadyState } from 'hono/ws';
import { upgradeWebSocket as upgrade, type UpgradeWebSocketOptions } from './websocket.js';

type Events = WSEvents<WebSocket>;

/** What Hono's handlers get as `ws`: the shape of Hono's `WSContext`, over the standard socket. */
function context(socket: WebSocket): WSContext<WebSocket> {
  const ws = {
    raw: socket,
    binaryType: 'arraybuffer' as BinaryType,
    get readyState(): WSReadyState {
      return socket.readyState as WSReadyState;
    },
    url: socket.url ? new URL(socket.url) : null,
    get protocol(): string | null {
      return socket.protocol;
    },
    send(source: string | ArrayBuffer | Uint8Array<ArrayBuffer>) {
      socket.send(source);
    },
    close(code?: number, reason?: string) {
      socket.close(code, reason);
    },
  };
  return ws as unknown as WSContext<WebSocket>;
}

/** Upgrades `c`'s request and wires `events` to the socket; undefined when it asks for no WebSocket. */
function accept(c: Context, events: Events, options?: UpgradeWebSocketOptions): Response | undefined {
  if (c.req.header('upgrade')?.toLowerCase() !== 'websocket') return undefined;
  const offered = c.req.header('sec-websocket-protocol')?.split(',')[0]?.trim();
  const { socket, response } = upgrade(c.req.raw, { ...(offered ? { protocol: offered } : {}), ...options });
  const ws = context(socket);
  socket.binaryType = 'arraybuffer';
  // What a handler throws (or rejects with) goes to onError, as Hono's adapters do; without one it is thrown.
  const fail = (err: unknown) => {
    if (!events.onError) throw err;
    const event = new Event('error');
    Object.defineProperty(event, 'error', { value: err });
    events.onError(event, ws);
  };
  const on = <E>(handler: ((evt: E, ws: WSContext<WebSocket>) => unknown) | undefined, evt: E) => {
    if (!handler) return;
    try {
      const result = handler(evt, ws);
      if (result instanceof Promise) result.catch(fail);
    } catch (err) {
      fail(err);
    }
  };
  socket.onopen = (evt) => on(events.onOpen, evt);
  socket.onmessage = (evt) => on(events.onMessage, evt);
  socket.onclose = (evt) => on(events.onClose, evt);
  socket.onerror = (evt) => on(events.onError, evt);
  return response;
}

/**
 * Hono's `upgradeWebSocket`: as middleware, `upgradeWebSocket((c) => events, options)`, which
 * passes requests that ask for no WebSocket on to `next`; or called in a handler,
 * `upgradeWebSocket(c, events, options)`. Options are `@molt/app`'s (`protocol`, `idleTimeout`).
 */
export const upgradeWebSocket = ((...args: unknown[]) => {
  if (typeof args[0] === 'function') {
    const [createEvents, options] = args as [(c: Context) => Events | Promise<Events>, UpgradeWebSocketOptions | undefined];
    const middleware: MiddlewareHandler = async (c, next) => {
      if (c.req.header('upgrade')?.toLowerCase() !== 'websocket') return next();
      const response = accept(c, await createEvents(c), options);
      if (response) return response;
      await next();
    };
    return middleware;
  }
  const [c, events, options] = args as [Context, Events, UpgradeWebSocketOptions | undefined];
  return (async () => {
    const response = accept(c, events, options);
    if (!response) throw new Error("Failed to upgrade WebSocket: the request has no 'Upgrade: websocket' header");
    return response;
  })();
}) as UpgradeWebSocket<WebSocket, UpgradeWebSocketOptions>;
