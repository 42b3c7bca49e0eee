/**
 * Where a request is for, besides the path routes: an app's own hostname (`<app>.<namespace>.<D>`,
 * `<app>.<D>` for the default namespace, or a domain the app claimed), at the root path. And how an
 * app's answer is fitted to the way it was reached: under a path prefix its absolute redirects and
 * cookie paths get the prefix (nginx's proxy_redirect and proxy_cookie_path); on every route a
 * cookie's Domain attribute is dropped, so a cookie stays on the host that set it.
 */

/** A request's Host, lower case, without port or trailing dot; undefined for an IP literal. */
export function hostName(value: string | undefined): string | undefined {
  if (!value || value.charCodeAt(0) === 91 /* [ */) return undefined;
  const colon = value.indexOf(':');
  let host = (colon < 0 ? value : value.slice(0, colon)).toLowerCase();
  if (host.endsWith('.')) host = host.slice(0, -1);
  return host || undefined;
}

/** `<app>.<namespace>.<base>` or `<app>.<base>` (default namespace) of one of the server's domains. */
export function underDomain(host: string, bases: readonly string[]): { namespace: string; app: string } | undefined {
  for (const base of bases) {
    if (host.length <= base.length + 1 || !host.endsWith(base) || host.charCodeAt(host.length - base.length - 1) !== 46 /* . */) continue;
    const labels = host.slice(0, host.length - base.length - 1).split('.');
    if (labels.length === 1) return { namespace: 'default', app: labels[0]! };
    if (labels.length === 2) return { namespace: labels[1]!, app: labels[0]! };
  }
  return undefined;
}

/** A `Location` the app sent, as the client must follow it under `prefix` (`/api/routes/v1/ns/app`). */
export function prefixLocation(location: string, prefix: string, host: string | undefined): string {
  if (location.charCodeAt(0) === 47 /* / */) {
    // `//other.host/x` is another origin; a path already under the prefix was written for it.
    if (location.charCodeAt(1) === 47 || underPrefix(location, prefix)) return location;
    return prefix + location;
  }
  if (!host) return location;
  // An absolute URL back to the same host: its path gets the prefix.
  const m = /^(https?:\/\/)([^/?#]+)(.*)$/i.exec(location);
  if (!m || m[2]!.toLowerCase() !== host) return location;
  const rest = m[3] || '/';
  return underPrefix(rest, prefix) ? location : `${m[1]}${m[2]}${prefix}${rest.startsWith('/') ? rest : `/${rest}`}`;
}

function underPrefix(path: string, prefix: string): boolean {
  if (!path.startsWith(prefix)) return false;
  const next = path.charCodeAt(prefix.length);
  return Number.isNaN(next) || next === 47 || next === 63 /* ? */ || next === 35 /* # */;
}

/**
 * A `Set-Cookie` value fitted to its route: no `Domain` (it would reach other hosts under it: every
 * app's host is under the server's domain), and under a prefix a `Path` of `/x` becomes
 * `<prefix>/x` (a missing Path defaults to the request's directory, which is under the prefix).
 */
export function fitCookie(value: string, prefix: string | undefined): string {
  if (!/;\s*(domain|path)\s*=/i.test(value)) return value;
  const parts = value.split(';');
  const out = [parts[0]!];
  for (let i = 1; i < parts.length; i++) {
    const part = parts[i]!;
    const eq = part.indexOf('=');
    const name = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
    if (name === 'domain') continue;
    if (name === 'path' && prefix) {
      const path = part.slice(eq + 1).trim();
      if (path.startsWith('/') && !underPrefix(path, prefix)) {
        out.push(` Path=${prefix}${path === '/' ? '/' : path}`);
        continue;
      }
    }
    out.push(part);
  }
  return out.join(';');
}
