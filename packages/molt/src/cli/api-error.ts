/**
 * An API error as a client shows it: the HTTP status and the server's code and message. Shared by
 * the CLI and the dashboard's page (it imports nothing, so it bundles for the browser).
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
