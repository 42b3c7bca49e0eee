import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PlanSide, UpgradePlan } from '../release/upgrade-plan.js';
import type { UpgradeInstruction } from '../runtime/control-messages.js';
import type { AppSpec } from '../config/app-spec.js';
import type { ReleaseRow } from '../store/types.js';
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

/** A release of the server as one side of a plan: its manifest, with the config it runs under. */
export async function serverSide(client: Client, namespace: string, releaseId: string, spec: AppSpec): Promise<PlanSide> {
  const { release } = await client.request<{ release: ReleaseRow }>('GET', `/api/v1/namespaces/${namespace}/releases/${releaseId}`);
  return { id: release.id, manifest: release.manifest, spec };
}

/**
 * The plan the app's `planTransform` (molt.config.ts) makes of the generated one, or undefined when
 * it has none. Generated here from the running release (`from`) and this build.
 */
export async function transformedPlan(
  dir: string,
  file: string | undefined,
  from: () => Promise<PlanSide>,
  built: PlanSide,
): Promise<{ up: UpgradeInstruction[]; down: UpgradeInstruction[]; source: string } | undefined> {
  const { loadAppConfig } = await import('../config/load-config.js');
  const { planTransform } = await loadAppConfig(dir, file);
  if (!planTransform) return undefined;
  const { generatePlan } = await import('../release/upgrade-plan.js');
  const plan = generatePlan(await from(), built);
  const out = planTransform({ from: plan.from, to: plan.to, up: plan.up, down: plan.down });
  return { up: out.up, down: out.down, source: 'planTransform in the app config' };
}
