import { MoltError } from '../errors.js';
import { sha256 } from '../ids.js';
import type { Store } from '../store/store.js';
import type { Role, TokenRow } from '../store/types.js';

const RANK: Record<Role, number> = { invoker: 1, deployer: 2, admin: 3 };
export const ROLES: Role[] = ['admin', 'deployer', 'invoker'];

/** Who is calling: the token's namespace (`*` for the server admin) and role. */
export interface Principal {
  tokenId: string;
  namespace: string;
  role: Role;
}

/** What each role may do, for messages that name the missing right. */
const RIGHT: Record<Role, string> = {
  invoker: 'call app routes',
  deployer: 'deploy and change apps, releases and volumes',
  admin: 'manage tokens and namespaces',
};

/** The right to read apps, workers, history, events, logs and releases (a deployer's, not an invoker's). */
export const READ_RIGHT = 'read apps, workers, revisions, events, logs and releases';

/** Throws 403 naming the missing right (`right`, else the role's) unless `p` has at least `role` in `namespace`. */
export function requireRole(p: Principal, namespace: string, role: Role, right = RIGHT[role]): void {
  const inScope = p.namespace === '*' || p.namespace === namespace;
  if (!inScope) {
    throw new MoltError('MOLT_ERR_FORBIDDEN', `this token belongs to namespace ${p.namespace} and has no rights in namespace ${namespace}; use a token of ${namespace}`);
  }
  if (RANK[p.role] < RANK[role]) {
    throw new MoltError('MOLT_ERR_FORBIDDEN', `this ${p.role} token cannot ${right} in namespace ${namespace}: that needs the ${role} role; ask an admin of ${namespace} for a ${role} token (\`molt token create --role ${role} -n ${namespace}\`)`);
  }
}

/** Throws 403 unless `p` is the server's admin (namespace `*`). */
export function requireServerAdmin(p: Principal): void {
  if (!(p.namespace === '*' && p.role === 'admin')) {
    throw new MoltError('MOLT_ERR_FORBIDDEN', `only the server's admin token can do this (this token is ${p.role} of ${p.namespace})`);
  }
}

const CACHE_MS = 5_000;
const CACHE_MAX = 10_000;

/**
 * Checks bearer tokens. Only sha256 hashes are stored; lookups are cached briefly so the
 * gateway does not query the store per request, and revocations in this process apply at once.
 */
export class TokenVerifier {
  /** Keyed by the Authorization header itself, so a cache hit costs no hashing. */
  private cache = new Map<string, { row: TokenRow | undefined; at: number }>();

  constructor(private readonly store: Pick<Store, 'tokenByHash'>) {}

  /** The principal of an `Authorization` header value; 401 naming what is wrong. */
  async verify(header: string | undefined): Promise<Principal> {
    const row = await this.lookup(header);
    return { tokenId: row.id, namespace: row.namespace, role: row.role };
  }

  /** The cached row if fresh (the gateway's fast path), else undefined. */
  cached(header: string | undefined): TokenRow | undefined | null {
    if (!header) return undefined;
    const hit = this.cache.get(header);
    if (!hit || Date.now() - hit.at > CACHE_MS) return undefined;
    return hit.row ?? null;
  }

  async lookup(header: string | undefined): Promise<TokenRow> {
    const hash = bearerHash(header);
    if (!hash) {
      throw new MoltError('MOLT_ERR_UNAUTHENTICATED', 'missing bearer token; send "Authorization: Bearer <token>" (see `molt token create`)');
    }
    let hit = this.cache.get(header!);
    if (!hit || Date.now() - hit.at > CACHE_MS) {
      if (this.cache.size > CACHE_MAX) this.cache.clear();
      hit = { row: await this.store.tokenByHash(hash), at: Date.now() };
      this.cache.set(header!, hit);
    }
    return checkRow(hit.row);
  }

  /** Forgets cached lookups, e.g. after a revocation. */
  invalidate(): void {
    this.cache.clear();
  }
}

export function checkRow(row: TokenRow | undefined | null): TokenRow {
  if (!row) throw new MoltError('MOLT_ERR_UNAUTHENTICATED', 'the bearer token is not valid; check it or create one with `molt token create`');
  if (row.revokedAt) throw new MoltError('MOLT_ERR_UNAUTHENTICATED', `token ${row.id} was revoked at ${row.revokedAt}; use another token`);
  return row;
}

function bearerHash(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? sha256(m[1]!) : undefined;
}
