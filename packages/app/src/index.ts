/**
 * What a molt app imports. This package has no dependencies; inside a worker the
 * runtime's own copy serves these imports, so there is one copy of its state per worker.
 */
export { defineApp } from './define-app.js';
export type {
  AppConfig,
  AppModule,
  ResourceRequests,
  VolumeRef,
  ReadinessConfig,
  RolloutConfig,
  HotConfig,
  PlanStep,
} from './define-app.js';
export { runtime } from './runtime-api.js';
export { defineProcess, processRuntime } from './process.js';
export type { CodeChange, Handler, HandlerResult, ProcessHandle, ProcessSpec } from './process.js';
export type { RuntimeInfo, VolumeInfo } from './runtime-api.js';
export { upgradeWebSocket, webSocketRuntime } from './websocket.js';
export type { UpgradeWebSocketOptions, WebSocketUpgrade } from './websocket.js';
