import type { BuiltRelease } from '../release/build-release.js';
import type { EventRow, ReleaseRow } from '../store/types.js';
import { ApiError, type Client } from './client.js';

export type Say = (line: string) => void;

/** Builds the app in `dir` and uploads the blobs the server lacks; returns the release. */
export async function pushRelease(client: Client, namespace: string, dir: string, file: string | undefined, say: Say): Promise<{ built: BuiltRelease; release: ReleaseRow }> {
  // Loaded on use: esbuild and tar cost startup time every other command need not pay.
  const { buildRelease } = await import('../release/build-release.js');
  const { planUpload, uploadArchive } = await import('./upload.js');
  const built = await buildRelease(dir, { file });
  const files = built.scanned.tree.entries.length;
  say(`built release ${built.id.slice(0, 12)} of ${built.spec.name}: ${built.manifest.modules.length} module(s), ${files} file(s) (${describeWork(built)})`);
  if (built.cached) {
    // Built and pushed before (`molt release build --push`): nothing to send.
    const known = await client.request<{ release: ReleaseRow }>('GET', `/api/v1/namespaces/${namespace}/releases/${built.id}`).catch((err) => {
      if (err instanceof ApiError && err.code === 'MOLT_ERR_RELEASE_NOT_FOUND') return undefined;
      throw err;
    });
    if (known?.release.id === built.id) {
      say(`release ${built.id.slice(0, 12)} is on the server already; nothing to upload`);
      return { built, release: known.release };
    }
  }
  const plan = await planUpload(client, `/api/v1/namespaces/${namespace}/blobs/missing`, built.scanned);
  say(`uploading ${plan.paths.length} new file(s) (${plan.bytes} B); the server has the rest`);
  const res = await client.upload<{ release: ReleaseRow }>(`/api/v1/namespaces/${namespace}/releases`, uploadArchive(built.dir, built.scanned, plan));
  return { built, release: res.release };
}

/** What a build had to do: nothing (a cache hit), or which of its steps ran. */
export function describeWork(built: BuiltRelease): string {
  if (built.cached) return 'unchanged: nothing compiled or copied';
  const { compiled, dependenciesCopied } = built.work;
  return `${compiled} module(s) compiled, dependencies ${dependenciesCopied ? 'copied' : 'reused'}`;
}

function clock(iso: string): string {
  return iso.slice(11, 19);
}

/** Prints a rollout's events as they happen; resolves with its final event. */
export async function followRollout(client: Client, namespace: string, app: string, rolloutId: string, say: Say): Promise<EventRow | undefined> {
  let final: EventRow | undefined;
  await client.stream<EventRow>(`/api/v1/namespaces/${namespace}/apps/${app}/events?rollout=${rolloutId}`, (e) => {
    say(`[${clock(e.ts)}] ${e.message}`);
    if (e.type === 'rollout.succeeded' || e.type === 'rollout.failed') final = e;
  });
  return final;
}
