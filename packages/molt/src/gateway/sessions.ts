import { createHmac, timingSafeEqual } from 'node:crypto';
import type { TokenRow } from '../store/types.js';

/**
 * Browser sessions: a signed cookie that stands for a molt token on one host, for browsers that
 * cannot send `Authorization` (a page's links, EventSource, WebSocket). It holds the token's id,
 * its expiry and an HMAC of both with the host, under a key the control plane keeps in the store;
 * so the data plane checks it with no lookup but the token table it already holds, and revoking
 * the token ends every session made from it.
 */
export const SESSION_COOKIE = 'molt_session';
/** Under TLS the `__Host-` prefix makes the browser keep it on this host, path /, Secure. */
export const SECURE_SESSION_COOKIE = `__Host-${SESSION_COOKIE}`;

/** A kind of session cookie: its name and SameSite policy. */
export interface CookieKind {
  name: string;
  sameSite: 'Lax' | 'Strict';
}

export const APP_COOKIE: CookieKind = { name: SESSION_COOKIE, sameSite: 'Lax' };
/** The dashboard's session on the server's own host (see control-plane/dashboard.ts). */
export const DASHBOARD_COOKIE: CookieKind = { name: 'molt_dashboard', sameSite: 'Strict' };

/** Under TLS the `__Host-` prefix makes the browser keep it on this host, path /, Secure. */
export const cookieName = (kind: CookieKind, secure: boolean) => (secure ? `__Host-${kind.name}` : kind.name);

export interface SessionOptions {
  /** HMAC key (the control plane's, the same on every server of a database). */
  key: Buffer;
  ttlMs: number;
}

export class Sessions {
  constructor(
    private readonly opts: SessionOptions,
    private readonly tokenById: (id: string) => TokenRow | undefined,
  ) {}

  get ttlMs(): number {
    return this.opts.ttlMs;
  }

  private sign(host: string, tokenId: string, expires: number): string {
    return createHmac('sha256', this.opts.key).update(`${host}\n${tokenId}\n${expires}`).digest('base64url');
  }

  /** A session for `token` on `host`, as a cookie value. */
  issue(host: string, token: TokenRow, now = Date.now()): string {
    const expires = Math.floor((now + this.opts.ttlMs) / 1000);
    return `${token.id}.${expires}.${this.sign(host, token.id, expires)}`;
  }

  /**
   * The `Set-Cookie` of a new session: HttpOnly, this host only, Secure (and `__Host-`) under TLS;
   * SameSite=Lax for an app's host (a link from elsewhere opens the app signed in), Strict for the
   * dashboard (nothing from another site is ever sent with it).
   */
  cookie(host: string, token: TokenRow, secure: boolean, kind: CookieKind = APP_COOKIE): string {
    return `${cookieName(kind, secure)}=${this.issue(host, token)}; Path=/; Max-Age=${Math.floor(this.opts.ttlMs / 1000)}; HttpOnly; SameSite=${kind.sameSite}${secure ? '; Secure' : ''}`;
  }

  /** The `Set-Cookie` that ends a session. */
  static clear(secure: boolean, kind: CookieKind = APP_COOKIE): string {
    return `${cookieName(kind, secure)}=; Path=/; Max-Age=0; HttpOnly; SameSite=${kind.sameSite}${secure ? '; Secure' : ''}`;
  }

  /**
   * The token a session cookie value stands for on `host`; undefined when it is forged, made for
   * another host, expired, or its token is unknown or revoked.
   */
  verify(value: string, host: string, now = Date.now()): TokenRow | undefined {
    const [id, expiresText, mac, extra] = value.split('.');
    if (!id || !expiresText || !mac || extra !== undefined) return undefined;
    const expires = Number(expiresText);
    if (!Number.isSafeInteger(expires) || expires * 1000 <= now) return undefined;
    const want = Buffer.from(this.sign(host, id, expires));
    const got = Buffer.from(mac);
    if (want.length !== got.length || !timingSafeEqual(want, got)) return undefined;
    const row = this.tokenById(id);
    return row && !row.revokedAt ? row : undefined;
  }
}

const DASHBOARD_NAMES = new Set([cookieName(DASHBOARD_COOKIE, false), cookieName(DASHBOARD_COOKIE, true)]);

/**
 * Takes molt's cookies out of a `Cookie` header: the app session's value, and the header without
 * it or the dashboard's session (what the app gets; empty when nothing else was in it). An app on
 * a path route shares the dashboard's host, so the browser sends it the dashboard's cookie: it is
 * never passed on, or app code could act with the session of whoever visits it.
 */
export function takeSessionCookie(header: string): { session?: string; rest: string } {
  let session: string | undefined;
  const kept: string[] = [];
  for (const pair of header.split(';')) {
    const eq = pair.indexOf('=');
    const name = (eq < 0 ? pair : pair.slice(0, eq)).trim();
    if (name === SESSION_COOKIE || name === SECURE_SESSION_COOKIE) session ??= pair.slice(eq + 1).trim();
    else if (DASHBOARD_NAMES.has(name)) continue;
    else if (pair.trim()) kept.push(pair.trim());
  }
  return { session, rest: kept.join('; ') };
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The login page of an app's host: a form that posts a token; no script, nothing from elsewhere. */
export function loginPage(app: string, next: string, problem?: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in to ${escapeHtml(app)}</title>
<style>body{font:16px system-ui,sans-serif;max-width:28rem;margin:10vh auto;padding:0 1rem}input,button{font:inherit;padding:.5rem;width:100%;box-sizing:border-box;margin:.25rem 0}p.problem{color:#a00}</style>
</head><body>
<h1>Sign in to ${escapeHtml(app)}</h1>
<p>This app is private. Paste a molt token that may call it (<code>molt token create</code>).</p>
${problem ? `<p class="problem" role="alert">${escapeHtml(problem)}</p>` : ''}
<form method="post" action="/.molt/login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus>
<input type="hidden" name="next" value="${escapeHtml(next)}">
<button type="submit">Sign in</button>
</form>
</body></html>
`;
}

/** Where a login may send the browser next: a path on this host, else `/`. */
export function safeNext(next: string | null | undefined): string {
  if (!next || next.charCodeAt(0) !== 47 || next.charCodeAt(1) === 47 || next.includes('\\') || /[\u0000-\u001f]/.test(next)) return '/';
  return next;
}

/** The strict policy of molt's own pages: nothing runs, nothing loads from elsewhere. */
export const PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
