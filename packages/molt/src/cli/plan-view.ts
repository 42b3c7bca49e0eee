import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { UpgradePlan } from '../release/upgrade-plan.js';
import type { UpgradeInstruction } from '../runtime/control-messages.js';
import type { AppSpec } from '../config/app-spec.js';
import type { ReleaseManifest, ReleaseRow } from '../store/types.js';
import type { Client } from './client.js';

/** Where a reviewed or hand-written plan between two releases lives in an app: `rel/plans/<from>-<to>.json`. */
export function planFile(appDir: string, from: string, to: string): string {
  return join(appDir, 'rel', 'plans', `${from.slice(0, 12)}-${to.slice(0, 12)}.json`);
}

/** A plan file's up and down lists, if the app has one for these releases. */
export function readPlanFile(appDir: string, from: string, to: string): { up: UpgradeInstruction[]; down: UpgradeInstruction[]; source: string } | undefined {
  const file = planFile(appDir, from, to);
  if (!existsSync(file)) return undefined;
  const plan = JSON.parse(readFileSync(file, 'utf8')) as { up: UpgradeInstruction[]; down: UpgradeInstruction[] };
  return { up: plan.up, down: plan.down, source: join('rel', 'plans', file.split('/').pop()!) };
}

function steps(list: UpgradeInstruction[]): string[] {
  if (list.length === 0) return ['  (nothing)'];
  const width = Math.max(...list.map((i) => i.module.length));
  return list.map((i, n) => `  ${String(n + 1).padStart(2)}. ${i.op.padEnd(6)} ${i.module.padEnd(width)}${i.fn ? ` ${i.fn}()` : ''}${i.reason ? `  (${i.reason})` : ''}`);
}

/** A plan as a reviewer reads it: strategy and why, the steps both ways, the warnings. */
export function describeUpgrade(plan: Pick<UpgradePlan, 'from' | 'to' | 'strategy' | 'reason' | 'up' | 'down' | 'warnings'>): string[] {
  return [
    `plan ${plan.from.slice(0, 12)} → ${plan.to.slice(0, 12)}: ${plan.strategy} (${plan.reason})`,
    'up:',
    ...steps(plan.up),
    'down:',
    ...steps(plan.down),
    ...(plan.warnings.length ? ['warnings:', ...plan.warnings.map((w) => `  - ${w}`)] : []),
  ];
}

/**
 * The plan the app's `planTransform` (molt.config.ts) makes of the generated one, or undefined when
 * it has none. Generated here from the running release's manifest and this build's.
 */
export async function transformedPlan(
  client: Client,
  namespace: string,
  app: string,
  dir: string,
  file: string | undefined,
  fromId: string,
  built: { id: string; manifest: ReleaseManifest; spec: AppSpec },
): Promise<{ up: UpgradeInstruction[]; down: UpgradeInstruction[]; source: string } | undefined> {
  const { loadAppConfig } = await import('../config/load-config.js');
  const { planTransform } = await loadAppConfig(dir, file);
  if (!planTransform) return undefined;
  const { generatePlan } = await import('../release/upgrade-plan.js');
  const { release } = await client.request<{ release: ReleaseRow }>('GET', `/api/v1/namespaces/${namespace}/releases/${fromId}`);
  const { app: current } = await client.request<{ app: { spec: AppSpec } }>('GET', `/api/v1/namespaces/${namespace}/apps/${app}`);
  const plan = generatePlan({ id: release.id, manifest: release.manifest, spec: current.spec }, built);
  const out = planTransform({ from: plan.from, to: plan.to, up: plan.up, down: plan.down });
  return { up: out.up, down: out.down, source: 'planTransform in the app config' };
}
