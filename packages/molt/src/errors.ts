/**
 * The error catalogue. Every error that reaches a user has a stable code, a message that
 * says what to do, and an HTTP status; errors cross the API as `{ error: { code, message } }`.
 */
export const ERRORS = {
  MOLT_ERR_BAD_REQUEST: 400,
  MOLT_ERR_INVALID_CONFIG: 400,
  MOLT_ERR_UNSAFE_ARCHIVE: 400,
  MOLT_ERR_MISSING_BLOB: 400,
  MOLT_ERR_BAD_RELEASE: 400,
  MOLT_ERR_BAD_PLAN: 400,
  MOLT_ERR_HOT_UNSAFE: 400,
  MOLT_ERR_UNAUTHENTICATED: 401,
  MOLT_ERR_FORBIDDEN: 403,
  MOLT_ERR_QUOTA_EXCEEDED: 403,
  MOLT_ERR_APP_IMMUTABLE: 403,
  MOLT_ERR_UNSCHEDULABLE: 422,
  MOLT_ERR_NOT_FOUND: 404,
  MOLT_ERR_REQUEST_TIMEOUT: 408,
  MOLT_ERR_APP_NOT_FOUND: 404,
  MOLT_ERR_NAMESPACE_NOT_FOUND: 404,
  MOLT_ERR_RELEASE_NOT_FOUND: 404,
  MOLT_ERR_REVISION_NOT_FOUND: 404,
  MOLT_ERR_VOLUME_NOT_FOUND: 404,
  MOLT_ERR_ALREADY_EXISTS: 409,
  MOLT_ERR_ROLLOUT_IN_PROGRESS: 409,
  MOLT_ERR_APP_PAUSED: 409,
  MOLT_ERR_VOLUME_IN_USE: 409,
  MOLT_ERR_CONFLICT: 409,
  MOLT_ERR_DOMAIN_TAKEN: 409,
  MOLT_ERR_RELEASE_GHOSTED: 409,
  MOLT_ERR_CORRUPT_BLOB: 409,
  MOLT_ERR_DATA_DIR_IN_USE: 409,
  MOLT_ERR_TAKEOVER_FAILED: 409,
  MOLT_ERR_DATABASE_MISMATCH: 409,
  MOLT_ERR_UPLOAD_TOO_LARGE: 413,
  MOLT_ERR_HEADERS_TOO_LARGE: 431,
  MOLT_ERR_UNSUPPORTED_CODING: 501,
  MOLT_ERR_UPSTREAM: 502,
  MOLT_ERR_NO_WORKER: 503,
  MOLT_ERR_BUSY: 503,
  MOLT_ERR_CONTROL_PLANE_DOWN: 503,
  MOLT_ERR_STANDBY: 503,
  MOLT_ERR_UPSTREAM_TIMEOUT: 504,
  MOLT_ERR_ILLEGAL_TRANSITION: 500,
  MOLT_ERR_INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ERRORS;

/** An error a user sees: stable `code`, actionable `message`, HTTP `status`. */
export class MoltError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MoltError';
    this.code = code;
    this.status = ERRORS[code];
  }

  toJSON(): { error: { code: string; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

/** Maps anything thrown to the `{ status, body }` the API sends. The one place errors become statuses. */
export function errorResponse(err: unknown): { status: number; body: { error: { code: string; message: string } } } {
  if (err instanceof MoltError) return { status: err.status, body: err.toJSON() };
  const fastifyLike = err as { statusCode?: number; code?: string; message?: string; validation?: unknown };
  if (fastifyLike && typeof fastifyLike.statusCode === 'number' && fastifyLike.statusCode < 500) {
    const code = fastifyLike.statusCode === 413 ? 'MOLT_ERR_UPLOAD_TOO_LARGE' : 'MOLT_ERR_BAD_REQUEST';
    return { status: fastifyLike.statusCode, body: { error: { code, message: fastifyLike.message ?? 'bad request' } } };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { status: 500, body: { error: { code: 'MOLT_ERR_INTERNAL', message: `internal error: ${message}` } } };
}
