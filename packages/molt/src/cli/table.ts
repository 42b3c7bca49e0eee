/** Prints rows as aligned columns under a header and a dashed rule, as `molt worker list` shows. */
export function table(headers: string[], rows: (string | number | null | undefined)[][]): string {
  const cells = rows.map((r) => r.map((c) => (c === null || c === undefined ? '' : String(c))));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}

/** `2024-07-05T08:41:49+0000`, the seed's timestamp form. */
export function stamp(iso: string | null | undefined): string {
  if (!iso) return '';
  return `${iso.slice(0, 19)}+0000`;
}
