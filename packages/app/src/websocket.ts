/** Options of `upgradeWebSocket`, as Deno's `Deno.upgradeWebSocket` takes them. */
export interface UpgradeWebSocketOptions {
  /** The subprotocol the server speaks, one of those the client offered in `Sec-WebSocket-Protocol`. */
  protocol?: string;
  /**
   * Seconds without a frame from the client after which the server pings it, and closes the socket
   * when no pong comes back within as long again. 0 never pings. Default 120, as Deno's.
   */
  idleTimeout?: number;
}

/** A WebSocket upgrade: the socket, and the answer `fetch` must return for it to open. */
export interface WebSocketUpgrade {
  /** A standard `WebSocket`: CONNECTING until `fetch` returns `response`, then `open`. */
  socket: WebSocket;
  /** `101 Switching Protocols`; headers set on it (cookies) go with the handshake. */
  response: Response;
}

type Upgrader = (request: Request, options: UpgradeWebSocketOptions) => WebSocketUpgrade;

let upgrader: Upgrader | undefined;

/**
 * Upgrades a request to a WebSocket, as Deno's `Deno.upgradeWebSocket` does: returns the socket and
 * the response to return from `fetch`. Throws a `TypeError` when the request asks for no WebSocket
 * (check `request.headers.get('upgrade') === 'websocket'` first).
 *
 * Through a hot upgrade an open socket keeps the listeners it has (the old code); a worker that is
 * replaced lets its sockets run to the app's drain deadline, then closes them with code 1001.
 *
 * @example
 * ```ts
 * import { upgradeWebSocket } from '@molt/app';
 * export default {
 *   fetch(request: Request) {
 *     if (request.headers.get('upgrade') !== 'websocket') return new Response('ws only', { status: 426 });
 *     const { socket, response } = upgradeWebSocket(request);
 *     socket.onmessage = (e) => socket.send(`echo: ${e.data}`);
 *     return response;
 *   },
 * };
 * ```
 */
export function upgradeWebSocket(request: Request, options: UpgradeWebSocketOptions = {}): WebSocketUpgrade {
  if (!upgrader) throw new Error('upgradeWebSocket works in a molt worker (`molt server`, `molt app run`): no molt runtime has loaded here');
  return upgrader(request, options);
}

/** How the molt runtime provides `upgradeWebSocket` (not for apps). */
export const webSocketRuntime = {
  install(fn: Upgrader): void {
    upgrader = fn;
  },
};
