import type { FastifyInstance } from 'fastify';
import { NAME } from '../../names.js';
import { MoltError } from '../../errors.js';
import { requireServerAdmin } from '../auth.js';
import { type ApiContext, principal } from './context.js';


export function namespaceRoutes(api: FastifyInstance, { cp }: ApiContext): void {
  api.get('/namespaces', async (req) => {
    const p = principal(req);
    const all = await cp.store.listNamespaces();
    return { namespaces: p.namespace === '*' ? all : all.filter((n) => n.name === p.namespace) };
  });

  api.post<{ Body: { name: string } }>(
    '/namespaces',
    { schema: { body: { type: 'object', required: ['name'], properties: { name: { type: 'string' } } } } },
    async (req, reply) => {
      requireServerAdmin(principal(req));
      const { name } = req.body;
      if (!NAME.test(name)) throw new MoltError('MOLT_ERR_BAD_REQUEST', `namespace name ${JSON.stringify(name)} is invalid; use lower-case letters, digits and dashes, starting with a letter`);
      if (!(await cp.store.createNamespace(name))) throw new MoltError('MOLT_ERR_ALREADY_EXISTS', `namespace ${name} already exists`);
      reply.code(201);
      return { namespace: await cp.store.getNamespace(name) };
    },
  );
}
