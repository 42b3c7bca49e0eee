import type { FastifyInstance } from 'fastify';
import { MoltError } from '../../errors.js';
import { newId, newToken, sha256 } from '../../ids.js';
import type { Role, TokenRow } from '../../store/types.js';
import { ROLES, requireRole } from '../auth.js';
import { type ApiContext, principal } from './context.js';

const publicToken = ({ hash: _hash, ...rest }: TokenRow) => rest;

export function tokenRoutes(api: FastifyInstance, { cp }: ApiContext): void {
  api.get<{ Querystring: { namespace?: string } }>('/tokens', async (req) => {
    const p = principal(req);
    const namespace = req.query.namespace ?? (p.namespace === '*' ? undefined : p.namespace);
    if (namespace) requireRole(p, namespace, 'admin');
    else if (p.namespace !== '*') requireRole(p, '*', 'admin');
    return { tokens: (await cp.store.listTokens(namespace)).map(publicToken) };
  });

  api.post<{ Body: { namespace: string; role: Role; name?: string } }>(
    '/tokens',
    {
      schema: {
        body: {
          type: 'object',
          required: ['namespace', 'role'],
          properties: { namespace: { type: 'string' }, role: { type: 'string' }, name: { type: 'string', maxLength: 100 } },
        },
      },
    },
    async (req, reply) => {
      const p = principal(req);
      const { namespace, role } = req.body;
      if (!ROLES.includes(role)) throw new MoltError('MOLT_ERR_BAD_REQUEST', `role ${JSON.stringify(role)} is unknown; use admin, deployer or invoker`);
      requireRole(p, namespace, 'admin');
      if (!(await cp.store.getNamespace(namespace))) {
        throw new MoltError('MOLT_ERR_NAMESPACE_NOT_FOUND', `namespace ${namespace} does not exist; create it with \`molt namespace create ${namespace}\``);
      }
      const secret = newToken();
      const row: TokenRow = {
        id: newId(12),
        name: req.body.name ?? `${role}@${namespace}`,
        namespace,
        role,
        hash: sha256(secret),
        createdAt: new Date().toISOString(),
        revokedAt: null,
      };
      await cp.store.insertToken(row);
      await cp.syncTokens();
      reply.code(201);
      return { token: secret, ...publicToken(row) };
    },
  );

  api.delete<{ Params: { id: string } }>('/tokens/:id', async (req) => {
    const p = principal(req);
    const token = await cp.store.getToken(req.params.id);
    if (!token) throw new MoltError('MOLT_ERR_NOT_FOUND', `no token ${req.params.id}; see \`molt token list\``);
    requireRole(p, token.namespace, 'admin');
    if (!(await cp.store.revokeToken(token.id, new Date().toISOString()))) throw new MoltError('MOLT_ERR_BAD_REQUEST', `token ${token.id} is already revoked`);
    await cp.syncTokens();
    return { revoked: token.id };
  });

  api.get('/whoami', async (req) => principal(req));
}
