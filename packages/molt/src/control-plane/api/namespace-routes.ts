import type { FastifyInstance } from 'fastify';
import { MoltError } from '../../errors.js';
import { NAME, NAME_RULE } from '../../names.js';
import type { NamespaceQuota, NamespaceRow } from '../../store/types.js';
import { requireServerAdmin } from '../auth.js';
import { QUOTA_FIELDS } from '../quotas.js';
import { namespaceUid } from '../sandbox/isolation.js';
import { type ApiContext, principal } from './context.js';

/** A quota value: a number of at least 0, or null to remove the limit. */
const LIMIT = { anyOf: [{ type: 'number', minimum: 0, maximum: Number.MAX_SAFE_INTEGER }, { type: 'null' }] };

export function namespaceRoutes(api: FastifyInstance, { cp }: ApiContext): void {
  /** A namespace as the API shows it: with what it holds and the uid its workers run as. */
  const view = async (ns: NamespaceRow) => {
    const users = cp.opts.isolation.sandboxed ? cp.opts.isolation.users : null;
    let uid: number | null = null;
    if (users) {
      try {
        uid = namespaceUid(users, ns.uidOffset, ns.name);
      } catch {
        // past the range: its workers cannot start, and say why
      }
    }
    return { ...ns, usage: await cp.quotas.usage(ns.name), uid };
  };

  api.get('/namespaces', async (req) => {
    const p = principal(req);
    const all = await cp.store.listNamespaces();
    return { namespaces: await Promise.all((p.namespace === '*' ? all : all.filter((n) => n.name === p.namespace)).map(view)) };
  });

  api.post<{ Body: { name: string } }>(
    '/namespaces',
    { schema: { body: { type: 'object', required: ['name'], properties: { name: { type: 'string', maxLength: 63 } } } } },
    async (req, reply) => {
      requireServerAdmin(principal(req));
      const { name } = req.body;
      if (!NAME.test(name)) throw new MoltError('MOLT_ERR_BAD_REQUEST', `namespace name ${JSON.stringify(name)} is invalid; use ${NAME_RULE}`);
      if (!(await cp.store.createNamespace(name))) throw new MoltError('MOLT_ERR_ALREADY_EXISTS', `namespace ${name} already exists`);
      reply.code(201);
      return { namespace: await view((await cp.store.getNamespace(name))!) };
    },
  );

  /** Sets some limits of a namespace's quota (null removes one); only the server admin may. */
  api.put<{ Params: { ns: string }; Body: Partial<Record<keyof NamespaceQuota, number | null>> }>(
    '/namespaces/:ns/quota',
    { schema: { body: { type: 'object', additionalProperties: false, properties: Object.fromEntries(QUOTA_FIELDS.map((f) => [f, LIMIT])) } } },
    async (req) => {
      requireServerAdmin(principal(req));
      const ns = await cp.store.getNamespace(req.params.ns);
      if (!ns) throw new MoltError('MOLT_ERR_NAMESPACE_NOT_FOUND', `namespace ${req.params.ns} does not exist; see \`molt namespace list\``);
      const quota: NamespaceQuota = { ...ns.quota };
      for (const field of QUOTA_FIELDS) {
        const value = req.body[field];
        if (value === undefined) continue;
        if (value === null) delete quota[field];
        else if (field !== 'cpu' && !Number.isInteger(value)) throw new MoltError('MOLT_ERR_BAD_REQUEST', `quota ${field} must be a whole number (got ${value})`);
        else quota[field] = value;
      }
      await cp.store.setNamespaceQuota(ns.name, quota);
      await cp.events.append({ namespace: ns.name, type: 'namespace.quota', message: `quota of ${ns.name} set: ${JSON.stringify(quota)}` });
      return { namespace: await view((await cp.store.getNamespace(ns.name))!) };
    },
  );
}
