/** An error to read now: said to screen readers as it appears; nothing when there is none. */
export function Problem({ error }: { error?: string }) {
  return error ? (
    <p class="error" role="alert">
      {error}
    </p>
  ) : null;
}
