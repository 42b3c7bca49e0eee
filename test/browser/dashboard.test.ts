import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyExample, ROOT, ServerProcess, tempDir, waitFor, writeApp } from '../helpers.js';
import { launchChromium } from './chromium.js';

/** The screenshots of the main views the docs show, made by this test run. */
const SHOTS = join(ROOT, 'docs', 'dashboard');

const COUNTER = (version: number, codeChange = '') => `
import { defineProcess } from '@molt/app';
export const counter = defineProcess({
  name: 'counter',
  init: () => ({ count: 0 }),
  handlers: {
    add: (s: { count: number }) => ({ state: { count: s.count + 1 }, reply: s.count + 1 }),
    get: (s: { count: number }) => ({ reply: 'v${version} count=' + s.count }),
  },
  ${codeChange}
});
`;

const INDEX = `
import { counter } from './counter.ts';
export default {
  async fetch(req: Request) {
    const url = new URL(req.url);
    if (url.pathname === '/healthz') return new Response('ok');
    if (url.pathname === '/add') return new Response(String(await counter.call('add')));
    if (url.pathname === '/log') { console.log(url.searchParams.get('line')); return new Response('logged'); }
    return new Response(String(await counter.call('get')));
  },
};
`;

describe('the dashboard in headless Chromium', () => {
  const server = new ServerProcess(tempDir(), ['--metrics-interval-ms', '500']);
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let dir = '';
  const pageErrors: string[] = [];
  const call = (path: string) => fetch(server.route('default', 'counter', path), { headers: { authorization: `Bearer ${server.adminToken}` } }).then((r) => r.text());
  /** `molt release build --out FILE` of the app as it is now on disk. */
  const releaseFile = async (name: string) => {
    const file = join(tempDir(), `${name}.tar`);
    const built = await server.molt(['release', 'build', '--out', file], { cwd: dir });
    expect(built.code, built.stderr).toBe(0);
    return file;
  };
  const signIn = async (p: Page, token: string) => {
    await p.goto(server.url);
    await p.getByLabel('Token').fill(token);
    await p.getByRole('button', { name: 'Sign in' }).click();
    await p.getByRole('navigation', { name: 'Sections' }).waitFor();
  };

  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    browser = await launchChromium();
    await server.start();
    dir = writeApp(join(tempDir(), 'counter'), {
      'molt.config.json': JSON.stringify({ name: 'counter', entry: 'index.ts', workers: 2, readiness: { path: '/healthz' }, hot: { canaryWindowMs: 300, permanentAfterMs: 1000 }, rollout: { drainTimeoutMs: 1000, stopGraceMs: 1000 } }),
      'counter.ts': COUNTER(1),
      'index.ts': INDEX,
    });
    const created = await server.molt(['app', 'create'], { cwd: dir });
    expect(created.code, created.stderr).toBe(0);
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
  });
  afterAll(async () => {
    await browser?.close();
    await server.stop();
  });

  it('is served at / with a strict policy, and signs in by keyboard with a token exchanged for an HttpOnly SameSite=Strict cookie', async () => {
    const res = await fetch(server.url);
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("default-src 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    // The API's answers are never pages either.
    const apiAnswer = await fetch(`${server.url}/api/v1/whoami`, { headers: { authorization: `Bearer ${server.adminToken}` } });
    expect(apiAnswer.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(apiAnswer.headers.get('x-content-type-options')).toBe('nosniff');
    expect(((await apiAnswer.json()) as { role: string }).role).toBe('admin');

    await page.goto(server.url);
    await page.getByLabel('Token').waitFor();
    // By keyboard alone: the token field takes focus with Tab, Enter submits.
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('token');
    await page.keyboard.type(server.adminToken);
    await page.keyboard.press('Enter');
    await page.getByRole('navigation', { name: 'Sections' }).waitFor();
    const cookie = (await context.cookies()).find((c) => c.name === 'molt_dashboard');
    expect(cookie?.httpOnly).toBe(true);
    expect(cookie?.sameSite).toBe('Strict');
    expect(cookie?.expires).toBeGreaterThan(Date.now() / 1000);
    // Never kept by the page: not in storage, not in the URL.
    expect(await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + location.href)).not.toContain(server.adminToken);
  });

  it('shows the deployed app with its workers ready, and its RUNNING workers with the seed\'s columns', async () => {
    await page.goto(server.url);
    const row = page.locator('tr[data-app="counter"]');
    await row.waitFor();
    await waitFor(async () => (await row.locator('[data-cell="workers"]').textContent())?.trim() === '2 / 2', 15_000, 'the list to show 2 of 2 workers');
    expect(await row.textContent()).toContain('running');
    await page.screenshot({ path: join(SHOTS, 'apps.png') });
    await row.getByRole('link', { name: 'counter' }).click();
    await page.locator('tr[data-status="RUNNING"]').first().waitFor();
    const headers = await page.locator('table.workers thead th').allTextContents();
    expect(headers).toEqual(['ID', 'STATUS', 'DETAIL_STATUS', 'CREATED_AT', 'DELETED_AT', 'REVISION', 'RELEASE', 'LIMITS']);
    expect(await page.locator('table.workers tr[data-status="RUNNING"]').count()).toBe(2);
  });

  it('draws the app\'s figures from the gateway and the data plane, live', async () => {
    for (let i = 0; i < 30; i++) await call('/');
    await page.goto(`${server.url}/#/apps/default/counter`);
    // The charts are canvases; their labels say each series' latest value.
    const traffic = page.getByRole('img', { name: /^Requests and 5xx per second/ });
    await waitFor(async () => ((await traffic.getAttribute('aria-label')) ?? '').match(/req\/s [\d.]+ \/s \(peak [1-9]/), 15_000, 'a request rate above 0');
    const rss = page.getByRole('img', { name: /^Memory per worker/ });
    const label = (await rss.getAttribute('aria-label')) ?? '';
    expect(label).toMatch(/\d+(\.\d+)? MiB/);
    expect(await page.locator('.chart canvas').count()).toBeGreaterThanOrEqual(4);
    // The same series for Prometheus, with the server admin token.
    const metrics = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${server.adminToken}` } })).text();
    expect(metrics).toMatch(/molt_http_requests_total\{namespace="default",app="counter"\} \d+/);
    expect(metrics).toContain('molt_worker_resident_memory_bytes{namespace="default",app="counter"');
    await page.screenshot({ path: join(SHOTS, 'app.png'), fullPage: true });
  });

  it('uploads a release file, shows the server\'s plan, applies it and follows each worker to success', async () => {
    await call('/add');
    writeFileSync(join(dir, 'counter.ts'), COUNTER(2, "codeChange: (old: any) => ({ count: old.count + 100 }),"));
    const file = await releaseFile('v2');
    await page.goto(`${server.url}/#/apps/default/counter/upgrade`);
    await page.getByLabel(/Release file/).setInputFiles(file);
    await page.getByRole('button', { name: 'Validate and plan' }).click();
    const plan = page.locator('section.plan');
    await plan.waitFor();
    expect(await plan.getAttribute('data-strategy')).toBe('hot');
    expect(await plan.textContent()).toContain('counter.js');
    expect(await plan.textContent()).toContain('canary');
    await page.screenshot({ path: join(SHOTS, 'plan.png'), fullPage: true });
    await page.getByRole('button', { name: 'Apply (hot)' }).click();
    const outcome = page.locator('section.progress [data-outcome]');
    await waitFor(async () => (await outcome.getAttribute('data-outcome')) !== 'running', 30_000, 'the upgrade to end');
    expect(await outcome.getAttribute('data-outcome')).toBe('succeeded');
    // Each worker went through the hot steps, the first one as the canary.
    const rows = page.locator('section.progress tr[data-worker]');
    expect(await rows.count()).toBe(2);
    for (const step of ['loading', 'suspended', 'migrated', 'swapped']) expect(await rows.locator(`td[data-step="${step}"].done`).count()).toBe(2);
    expect(await page.locator('section.progress td[data-step="canary"].done').count()).toBe(1);
    // Permanent once the probation ends.
    await waitFor(async () => (await page.locator('section.progress td[data-step="permanent"].done').count()) === 2, 15_000, 'the revision to become permanent');
    await page.screenshot({ path: join(SHOTS, 'progress.png'), fullPage: true });
    expect(await call('/')).toMatch(/^v2 count=1\d\d$/);
  });

  it('applies a release whose codeChange throws and shows the failure and what was rolled back', async () => {
    writeFileSync(join(dir, 'counter.ts'), COUNTER(3, "codeChange: () => { throw new Error('state does not fit'); },"));
    const file = await releaseFile('v3');
    await page.goto(`${server.url}/#/apps/default/counter/upgrade`);
    await page.getByLabel(/Release file/).setInputFiles(file);
    await page.getByRole('button', { name: 'Validate and plan' }).click();
    await page.getByRole('button', { name: 'Apply (hot)' }).click();
    const outcome = page.locator('section.progress [data-outcome]');
    await waitFor(async () => (await outcome.getAttribute('data-outcome')) !== 'running', 30_000, 'the upgrade to end');
    expect(await outcome.getAttribute('data-outcome')).toBe('failed');
    const text = (await page.locator('section.progress').textContent()) ?? '';
    expect(text).toContain('state does not fit');
    // The canary failed while migrating its state; nothing else was swapped.
    expect(text).toContain('migrated failed');
    expect(await call('/')).toMatch(/^v2 /);
  });

  it('rolls back from the history after a confirmation, with live progress', async () => {
    await page.goto(`${server.url}/#/apps/default/counter/history`);
    await page.getByRole('button', { name: 'Roll back to revision 1' }).click();
    const dialog = page.getByRole('dialog');
    expect(await dialog.textContent()).toContain('Revision 1 will serve again');
    await dialog.getByRole('button', { name: 'Roll back to revision 1' }).click();
    const outcome = page.locator('section.progress [data-outcome]');
    await waitFor(async () => (await outcome.getAttribute('data-outcome')) === 'succeeded', 30_000, 'the rollback to succeed');
    expect(await call('/')).toMatch(/^v1 /);
    await waitFor(async () => ((await page.locator('table.history tbody tr').first().textContent()) ?? '').includes('rollback'), 10_000, 'the rollback revision in the history');
  });

  it('shows an update started from the CLI live, in an open page', async () => {
    await page.goto(`${server.url}/#/apps/default/counter`);
    await page.locator('table.workers tr[data-status="RUNNING"]').first().waitFor();
    writeFileSync(join(dir, 'counter.ts'), COUNTER(4));
    const update = server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
    const rolloutId = await waitFor(async () => (await server.api('GET', '/api/v1/namespaces/default/apps/counter')).body.app.rolloutId, 30_000, 'the CLI update to start');
    const progress = page.locator(`section.progress[data-rollout="${rolloutId}"]`);
    await progress.waitFor({ timeout: 30_000 });
    const outcome = progress.locator('[data-outcome]');
    await waitFor(async () => (await outcome.getAttribute('data-outcome')) === 'succeeded', 60_000, 'the CLI update to succeed in the page');
    expect(((await progress.locator('h2').textContent()) ?? '').startsWith('Rolling update')).toBe(true);
    expect(await progress.locator('tr[data-worker] td[data-step="ready"].done').count()).toBeGreaterThanOrEqual(2);
    expect((await update).code).toBe(0);
  });

  it('shows log lines live, filtered by worker, and markup in them as text', async () => {
    await page.goto(`${server.url}/#/apps/default/counter/logs`);
    await page.getByLabel('Worker').waitFor();
    await call(`/log?line=${encodeURIComponent('hello from the test')}`);
    const logs = page.locator('ol.logs');
    await waitFor(async () => ((await logs.textContent()) ?? '').includes('hello from the test'), 15_000, 'the log line');
    const markup = '<img src=x onerror="document.title=\'pwned\'"><script>document.title=\'pwned\'</script>';
    await call(`/log?line=${encodeURIComponent(markup)}`);
    await waitFor(async () => ((await logs.textContent()) ?? '').includes('<img src=x'), 15_000, 'the markup line, as text');
    expect(await logs.locator('img, script').count()).toBe(0);
    expect(await page.title()).toBe('molt');
    // One worker's lines only.
    const first = await page.locator('#log-worker option').nth(1).getAttribute('value');
    await page.getByLabel('Worker').selectOption(first!);
    await waitFor(async () => (await logs.locator('li').count()) === 0 || (await logs.locator('code.wid').allTextContents()).every((w) => first!.startsWith(w)), 10_000, 'only that worker\'s lines');
  });

  it('renders names and messages with markup as text (app names cannot hold any: the API refuses them)', async () => {
    const refused = await server.api('POST', '/api/v1/namespaces/default/apps', { config: { name: '<img src=x onerror=alert(1)>', entry: 'index.ts' }, releaseId: 'x' });
    expect(refused.status).toBe(400);
    const named = await server.api('POST', '/api/v1/tokens', { namespace: 'default', role: 'invoker', name: '<img src=x onerror="document.title=\'pwned\'">' });
    expect(named.status).toBe(201);
    await page.goto(`${server.url}/#/tokens`);
    const row = page.locator(`tr[data-token="${named.body.id}"]`);
    await row.waitFor();
    expect(await row.textContent()).toContain('<img src=x');
    expect(await row.locator('img').count()).toBe(0);
    await page.goto(`${server.url}/#/apps/default/counter/events`);
    await page.locator('ol.events li').first().waitFor();
    expect(await page.locator('ol.events').textContent()).toContain('state does not fit');
    expect(await page.title()).toBe('molt');
    expect(pageErrors).toEqual([]);
  });

  it('obeys the token: a deployer of another namespace sees none of these apps; a revoked token\'s session is refused', async () => {
    expect((await server.api('POST', '/api/v1/namespaces', { name: 'team' })).status).toBe(201);
    const deployer = await server.createToken('team', 'deployer');
    const other = await browser.newContext();
    const p = await other.newPage();
    await signIn(p, deployer);
    await p.getByRole('heading', { name: 'Apps' }).waitFor();
    await waitFor(async () => (await p.textContent('main'))?.includes('No apps yet'), 10_000, 'the empty list of team');
    expect(await p.locator('tr[data-app="counter"]').count()).toBe(0);
    expect(await p.getByRole('link', { name: 'Tokens & quotas' }).count()).toBe(0);
    // The session cannot read default's app through the API either.
    const denied = await p.evaluate(async () => (await fetch('/api/v1/namespaces/default/apps')).status);
    expect(denied).toBe(403);
    // A change with the session must come from the page's own origin.
    const cookie = (await other.cookies()).find((c) => c.name === 'molt_dashboard')!;
    const forged = await fetch(`${server.url}/api/v1/namespaces/team/volumes`, { method: 'POST', headers: { cookie: `molt_dashboard=${cookie.value}`, origin: 'http://evil.example', 'content-type': 'application/json' }, body: JSON.stringify({ name: 'x' }) });
    expect(forged.status).toBe(403);

    const tokens = await server.api('GET', '/api/v1/tokens?namespace=team');
    const id = tokens.body.tokens.find((t: { role: string }) => t.role === 'deployer').id;
    expect((await server.api('DELETE', `/api/v1/tokens/${id}`)).status).toBe(200);
    const after = await fetch(`${server.url}/api/v1/session`, { headers: { cookie: `molt_dashboard=${cookie.value}` } });
    expect(after.status).toBe(401);
    expect(((await after.json()) as { error: { message: string } }).error.message).toContain('revoked');
    await p.reload();
    await p.getByLabel('Token').waitFor();
    await other.close();
  });

  it('shows volumes with their revisions, files and the apps that follow them; releases with their modules; nodes', async () => {
    const example = copyExample();
    const prepared = await server.molt(['app', 'prepare'], { cwd: example });
    expect(prepared.code, prepared.stderr).toBe(0);
    const created = await server.molt(['app', 'create'], { cwd: example });
    expect(created.code, created.stderr).toBe(0);
    await page.goto(`${server.url}/#/volumes`);
    await page.getByRole('link', { name: 'get-start-volume' }).click();
    await page.getByRole('heading', { name: 'get-start-volume' }).waitFor();
    await waitFor(async () => ((await page.locator('main').textContent()) ?? '').includes('default/get-start (follows)'), 10_000, 'the app that follows the volume');
    expect(await page.locator('table.tree').textContent()).toContain('my-model');
    await page.screenshot({ path: join(SHOTS, 'volume.png'), fullPage: true });
    await page.goto(`${server.url}/#/releases`);
    await page.locator('main tbody tr').first().waitFor();
    const counterRelease = page.locator('main tbody tr', { hasText: 'counter' }).first();
    await counterRelease.getByRole('link').click();
    await page.getByRole('heading', { name: /^Release / }).waitFor();
    expect(await page.locator('main table').textContent()).toContain('counter.js');
    await page.goto(`${server.url}/#/nodes`);
    await page.locator('article.node').waitFor();
    expect(await page.locator('article.node').textContent()).toMatch(/of \d+ cores requested/);
  });

  it('works at 375 px wide: nothing overflows the page, tables scroll in their own box', async () => {
    const narrow = await browser.newContext({ viewport: { width: 375, height: 800 } });
    const p = await narrow.newPage();
    await signIn(p, server.adminToken);
    for (const view of ['#/', '#/apps/default/counter', '#/apps/default/counter/history', '#/volumes', '#/releases', '#/nodes', '#/tokens']) {
      await p.goto(`${server.url}/${view}`);
      await p.locator('main h1').waitFor();
      await p.waitForTimeout(300);
      const { width, wide } = await p.evaluate(() => ({
        width: document.documentElement.scrollWidth,
        // What sticks out, outside the boxes that scroll on their own.
        wide: [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > 376 && !e.closest('.scroll')).slice(0, 5).map((e) => `${e.tagName.toLowerCase()}.${e.className}`),
      }));
      expect(width, `${view} is ${width} px wide: ${wide.join(', ')}`).toBeLessThanOrEqual(375);
    }
    await p.goto(`${server.url}/#/apps/default/counter`);
    await p.locator('table.workers tbody tr').first().waitFor();
    await p.screenshot({ path: join(SHOTS, 'app-375.png'), fullPage: true });
    await narrow.close();
  });
});
