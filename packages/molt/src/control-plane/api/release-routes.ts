import type { FastifyInstance } from 'fastify';
import type { Readable } from 'node:stream';
import { ingestArchive } from '../../blobs/ingest-archive.js';
import type { Tree } from '../../blobs/tree.js';
import { treeSize } from '../../blobs/tree.js';
import { MoltError } from '../../errors.js';
import { NAME, NAME_RULE } from '../../names.js';
import { MANIFEST_FILE } from '../../release/build-release.js';
import type { ReleaseManifest, ReleaseRow } from '../../store/types.js';
import { READ_RIGHT, requireRole } from '../auth.js';
import { type ApiContext, principal } from './context.js';

/** Checks a release manifest read from an uploaded tree; names the first problem. */
function parseManifest(tree: Tree, read: (hash: string) => string): ReleaseManifest {
  const entry = tree.entries.find((e) => e.path === MANIFEST_FILE);
  if (!entry || entry.type !== 'file') throw new MoltError('MOLT_ERR_BAD_RELEASE', `the release has no ${MANIFEST_FILE}; build it with \`molt release build\``);
  let m: ReleaseManifest;
  try {
    m = JSON.parse(read(entry.hash));
  } catch (err) {
    throw new MoltError('MOLT_ERR_BAD_RELEASE', `${MANIFEST_FILE} is not valid JSON: ${(err as Error).message}`);
  }
  for (const field of ['app', 'version', 'node', 'dependencyHash', 'configHash', 'entry'] as const) {
    if (typeof m[field] !== 'string') throw new MoltError('MOLT_ERR_BAD_RELEASE', `${MANIFEST_FILE}: ${field} must be a string`);
  }
  if (!NAME.test(m.app)) throw new MoltError('MOLT_ERR_BAD_RELEASE', `${MANIFEST_FILE}: app ${JSON.stringify(m.app)} is not an app name (${NAME_RULE})`);
  if (!Array.isArray(m.modules)) throw new MoltError('MOLT_ERR_BAD_RELEASE', `${MANIFEST_FILE}: modules must be a list`);
  const paths = new Set(tree.entries.map((e) => e.path));
  if (!paths.has(m.entry)) throw new MoltError('MOLT_ERR_BAD_RELEASE', `${MANIFEST_FILE}: entry ${m.entry} is not in the release`);
  for (const mod of m.modules as unknown[]) {
    const { path, imports, source } = (mod ?? {}) as { path?: unknown; imports?: unknown; source?: unknown };
    if (typeof path !== 'string' || !Array.isArray(imports) || !imports.every((i) => typeof i === 'string') || (source !== undefined && typeof source !== 'string')) {
      throw new MoltError('MOLT_ERR_BAD_RELEASE', `${MANIFEST_FILE}: each module needs a path, a list of imports and, if any, a source path (got ${JSON.stringify(mod)?.slice(0, 200)})`);
    }
    if (!paths.has(path)) throw new MoltError('MOLT_ERR_BAD_RELEASE', `${MANIFEST_FILE}: module ${path} is not in the release`);
  }
  return m;
}

export function releaseRoutes(api: FastifyInstance, { cp }: ApiContext): void {
  api.addContentTypeParser('application/x-tar', (_req, payload, done) => done(null, payload));

  api.post<{ Params: { ns: string }; Body: { hashes: string[] } }>(
    '/namespaces/:ns/blobs/missing',
    { schema: { body: { type: 'object', required: ['hashes'], properties: { hashes: { type: 'array', items: { type: 'string', pattern: '^[0-9a-f]{64}$' } } } } } },
    async (req) => {
      requireRole(principal(req), req.params.ns, 'deployer');
      return { missing: await cp.blobAccess.missing(req.params.ns, req.body.hashes, cp.opts.maxUploadFiles) };
    },
  );

  api.post<{ Params: { ns: string } }>('/namespaces/:ns/releases', { bodyLimit: Number.MAX_SAFE_INTEGER }, async (req, reply) => {
    const { ns } = req.params;
    requireRole(principal(req), ns, 'deployer');
    if (!(await cp.store.getNamespace(ns))) throw new MoltError('MOLT_ERR_NAMESPACE_NOT_FOUND', `namespace ${ns} does not exist`);
    if (req.headers['content-type'] !== 'application/x-tar') throw new MoltError('MOLT_ERR_BAD_REQUEST', 'upload a tar archive with content-type application/x-tar');
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > cp.opts.maxUploadBytes) {
      throw new MoltError('MOLT_ERR_UPLOAD_TOO_LARGE', `upload of ${length} bytes is over the limit of ${cp.opts.maxUploadBytes} bytes; raise --max-upload-bytes on the server or upload less`);
    }
    const limits = { maxBytes: cp.opts.maxUploadBytes, maxBytesFlag: '--max-upload-bytes', maxFiles: cp.opts.maxUploadFiles };
    return cp.uploads.run(async () => {
      const upload = await ingestArchive(req.body as Readable, cp.blobs, limits, (hashes) => cp.blobAccess.usable(ns, hashes));
      try {
        // Everything is checked before the upload's blobs enter the store: a refused one stores nothing.
        const manifest = parseManifest(upload.tree, upload.readText);
        const existing = await cp.store.getRelease(ns, upload.hash);
        const store = async () => {
          const added = upload.commit();
          await cp.blobAccess.record(ns, upload.tree);
          // Materialized now, off the path of the update that will run it (a hot swap takes milliseconds).
          await cp.supervisor.releaseDir(ns, manifest.app, upload.hash);
          const row: ReleaseRow = existing ?? {
            id: upload.hash,
            namespace: ns,
            app: manifest.app,
            manifest,
            files: upload.tree.entries.length,
            size: treeSize(upload.tree),
            createdAt: new Date().toISOString(),
          };
          if (!existing) {
            await cp.sharedBlobs.publish(upload.hash);
            await cp.store.insertRelease(row);
          }
          return { release: row, uploaded: { blobs: added, bytes: upload.receivedBytes } };
        };
        const result = existing ? await store() : await cp.quotas.admit(ns, () => cp.quotas.checkRelease(ns), store);
        reply.code(existing ? 200 : 201);
        return result;
      } finally {
        upload.discard();
      }
    });
  });

  api.get<{ Params: { ns: string }; Querystring: { app?: string } }>('/namespaces/:ns/releases', async (req) => {
    requireRole(principal(req), req.params.ns, 'deployer', READ_RIGHT);
    return { releases: await cp.store.listReleases(req.params.ns, req.query.app) };
  });

  /** A release of the namespace by id or id prefix (as `release list` shows it). */
  const findRelease = async (ns: string, id: string): Promise<ReleaseRow> => {
    const all = await cp.store.listReleases(ns);
    const rel = all.find((r) => r.id === id) ?? all.filter((r) => r.id.startsWith(id)).at(0);
    if (!rel) throw new MoltError('MOLT_ERR_RELEASE_NOT_FOUND', `no release ${id} in namespace ${ns}; see \`molt release list\``);
    return rel;
  };

  api.get<{ Params: { ns: string; id: string } }>('/namespaces/:ns/releases/:id', async (req) => {
    requireRole(principal(req), req.params.ns, 'deployer', READ_RIGHT);
    return { release: await findRelease(req.params.ns, req.params.id) };
  });

  /**
   * Deletes a release that no app runs, boots on probation or is rolling to; its rows go, the
   * apps' copies of its tree too. History keeps the revisions that used it (a rollback to one
   * asks for the release to be pushed again).
   */
  api.delete<{ Params: { ns: string; id: string } }>('/namespaces/:ns/releases/:id', async (req) => {
    const { ns } = req.params;
    requireRole(principal(req), ns, 'deployer');
    const rel = await findRelease(ns, req.params.id);
    const users = (await cp.apps.usersOf((r) => r.releaseId === rel.id, ns)).map((a) => a.name);
    if (users.length > 0) {
      throw new MoltError('MOLT_ERR_CONFLICT', `release ${rel.id.slice(0, 12)} is in use by app(s) ${users.join(', ')}; update or delete them first`);
    }
    await cp.store.deleteRelease(ns, rel.id);
    for (const app of await cp.store.listApps(ns)) cp.supervisor.removeRelease(ns, app.name, rel.id);
    await cp.events.append({ namespace: ns, type: 'release.deleted', message: `release ${rel.id.slice(0, 12)} of ${rel.app} deleted` });
    return { deleted: rel.id };
  });
}
