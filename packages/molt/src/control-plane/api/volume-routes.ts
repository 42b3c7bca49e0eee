import type { FastifyInstance } from 'fastify';
import type { Readable } from 'node:stream';
import { c as createTar } from 'tar';
import { join } from 'node:path';
import { fileHashes } from '../../blobs/tree.js';
import { MoltError } from '../../errors.js';
import { type ApiContext, principal } from './context.js';

type VolumeParams = { ns: string; name: string };



export function volumeRoutes(api: FastifyInstance, { cp, volumes }: ApiContext): void {
  // Bounded by the API's body limit; blobs/missing refuses more than a tree may hold, by name.
  const HASHES = { type: 'array', items: { type: 'string', pattern: '^[0-9a-f]{64}$' } } as const;
  api.get<{ Params: { ns: string } }>('/namespaces/:ns/volumes', async (req) => ({ volumes: await volumes.list(principal(req), req.params.ns) }));

  api.post<{ Params: { ns: string }; Body: { name: string } }>(
    '/namespaces/:ns/volumes',
    { schema: { body: { type: 'object', required: ['name'], properties: { name: { type: 'string' } } } } },
    async (req, reply) => {
      reply.code(201);
      return { volume: await volumes.create(principal(req), req.params.ns, req.body.name) };
    },
  );

  api.get<{ Params: VolumeParams }>('/namespaces/:ns/volumes/:name', async (req) => volumes.detail(principal(req), req.params.ns, req.params.name));

  api.delete<{ Params: VolumeParams }>('/namespaces/:ns/volumes/:name', async (req, reply) => {
    await volumes.delete(principal(req), req.params.ns, req.params.name);
    reply.code(204);
  });

  api.get<{ Params: VolumeParams; Querystring: { revision?: string } }>('/namespaces/:ns/volumes/:name/tree', async (req) =>
    volumes.tree(principal(req), req.params.ns, req.params.name, req.query.revision),
  );

  api.post<{ Params: VolumeParams; Body: { hashes: string[] } }>(
    '/namespaces/:ns/volumes/:name/blobs/missing',
    { schema: { body: { type: 'object', required: ['hashes'], properties: { hashes: HASHES } } } },
    async (req) => {
      const p = principal(req);
      await volumes.access(p, req.params.ns, req.params.name, 'write');
      // What the uploader must send: it is told nothing of blobs it may not use.
      return { missing: await cp.blobAccess.missing(p.namespace === '*' ? req.params.ns : p.namespace, req.body.hashes, cp.opts.maxUploadFiles) };
    },
  );

  // A push: a tar of MOLT-TREE.json and the files the server lacks. `?base=` guards against
  // overwriting someone else's push.
  api.post<{ Params: VolumeParams; Querystring: { base?: string } }>(
    '/namespaces/:ns/volumes/:name/revisions',
    { bodyLimit: Number.MAX_SAFE_INTEGER },
    async (req, reply) => {
      if (req.headers['content-type'] !== 'application/x-tar') throw new MoltError('MOLT_ERR_BAD_REQUEST', 'upload a tar archive with content-type application/x-tar');
      const result = await volumes.push(principal(req), req.params.ns, req.params.name, req.body as Readable, req.query.base);
      reply.code(result.changed ? 201 : 200);
      return result;
    },
  );

  // A pull: the files of one revision, by hash, as a tar (only hashes of that revision are served).
  api.post<{ Params: VolumeParams; Body: { revision?: string; hashes: string[] } }>(
    '/namespaces/:ns/volumes/:name/download',
    { schema: { body: { type: 'object', required: ['hashes'], properties: { revision: { type: 'string' }, hashes: HASHES } } } },
    async (req, reply) => {
      const { tree } = await volumes.tree(principal(req), req.params.ns, req.params.name, req.body.revision);
      const inTree = new Set(fileHashes(tree));
      const wanted = [...new Set(req.body.hashes)];
      const foreign = wanted.find((h) => !inTree.has(h));
      if (foreign) throw new MoltError('MOLT_ERR_BAD_REQUEST', `blob ${foreign.slice(0, 12)}… is not part of that revision; ask only for files of the tree`);
      reply.header('content-type', 'application/x-tar');
      const files = wanted.map((h) => join(h.slice(0, 2), h));
      return reply.send(createTar({ cwd: join(cp.blobs.root, 'sha256'), portable: true, noDirRecurse: true }, files));
    },
  );

  api.post<{ Params: VolumeParams; Body: { namespace: string; write?: boolean } }>(
    '/namespaces/:ns/volumes/:name/grants',
    { schema: { body: { type: 'object', required: ['namespace'], properties: { namespace: { type: 'string' }, write: { type: 'boolean' } } } } },
    async (req, reply) => {
      reply.code(201);
      return { grant: await volumes.grant(principal(req), req.params.ns, req.params.name, req.body.namespace, req.body.write === true) };
    },
  );

  api.delete<{ Params: VolumeParams & { to: string } }>('/namespaces/:ns/volumes/:name/grants/:to', async (req, reply) => {
    await volumes.revoke(principal(req), req.params.ns, req.params.name, req.params.to);
    reply.code(204);
  });
}
