import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { api, ApiError, onSignedOut } from './api.ts';
import { live } from './live.ts';
import type { Principal } from './types.ts';
import { AppsView } from './views/apps.tsx';
import { AppView } from './views/app.tsx';
import { NodesView, ReleasesView, TokensView, VolumesView } from './views/resources.tsx';
import { useRoute } from './router.ts';
import { Problem } from './views/problem.tsx';

function Login({ onIn, problem }: { onIn: (p: Principal) => void; problem?: string }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState(problem ?? '');
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      // The token goes once to the server, which answers with an HttpOnly session cookie; the page keeps nothing.
      const { principal } = await api<{ principal: Principal }>('POST', '/session', { token });
      setToken('');
      onIn(principal);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="login">
      <h1>molt</h1>
      <form onSubmit={submit} aria-describedby="login-help">
        <p id="login-help">Sign in with a molt token: the admin token of the server, or one made by <code>molt token create</code>.</p>
        <label for="token">Token</label>
        <input id="token" name="token" type="password" autocomplete="off" required value={token} onInput={(e) => setToken((e.target as HTMLInputElement).value)} />
        <Problem error={error} />
        <button type="submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}

const NAV: { path: string; label: string; admin?: boolean }[] = [
  { path: '#/', label: 'Apps' },
  { path: '#/volumes', label: 'Volumes' },
  { path: '#/releases', label: 'Releases' },
  { path: '#/nodes', label: 'Nodes' },
  { path: '#/tokens', label: 'Tokens & quotas', admin: true },
];

function Shell({ me, onOut }: { me: Principal; onOut: () => void }) {
  const route = useRoute();
  const [connected, setConnected] = useState(live.connected);
  useEffect(() => {
    live.start();
    const off = live.onStatus(setConnected);
    return () => {
      off();
      live.stop();
    };
  }, []);
  const signOut = async () => {
    await api('DELETE', '/session').catch(() => {});
    onOut();
  };
  const section = route[0] ?? '';
  let view;
  if (section === 'apps' && route[1] && route[2]) view = <AppView me={me} namespace={route[1]} app={route[2]} tab={route[3] ?? 'overview'} />;
  else if (section === 'volumes') view = <VolumesView me={me} namespace={route[1]} volume={route[2]} />;
  else if (section === 'releases') view = <ReleasesView me={me} namespace={route[1]} release={route[2]} />;
  else if (section === 'nodes') view = <NodesView />;
  else if (section === 'tokens') view = <TokensView me={me} />;
  else view = <AppsView me={me} />;
  const current = section === 'apps' || section === '' ? '#/' : `#/${section}`;
  return (
    <>
      <header class="top">
        <a class="brand" href="#/">
          molt
        </a>
        <nav aria-label="Sections">
          {NAV.filter((n) => !n.admin || me.role === 'admin').map((n) => (
            <a href={n.path} aria-current={n.path === current ? 'page' : undefined}>
              {n.label}
            </a>
          ))}
        </nav>
        <span class="who">
          <span class={connected ? 'dot up' : 'dot'} role="status" aria-label={connected ? 'live updates connected' : 'live updates reconnecting'} title={connected ? 'live' : 'reconnecting'} />
          {me.role} of {me.namespace === '*' ? 'all namespaces' : me.namespace}
          <button type="button" class="link" onClick={signOut}>
            Sign out
          </button>
        </span>
      </header>
      <main id="main">{view}</main>
    </>
  );
}

function Root() {
  const [me, setMe] = useState<Principal | null | undefined>(undefined);
  const [problem, setProblem] = useState<string>();
  useEffect(() => {
    api<{ principal: Principal }>('GET', '/session').then(
      (r) => setMe(r.principal),
      (err) => {
        if (err instanceof ApiError && err.status !== 401) setProblem(err.message);
        setMe(null);
      },
    );
    return onSignedOut(() => {
      setProblem('Your session has ended (it expired, or its token was revoked). Sign in again.');
      setMe(null);
    });
  }, []);
  if (me === undefined) return <p class="boot">Loading…</p>;
  if (me === null) return <Login problem={problem} onIn={(p) => (setProblem(undefined), setMe(p))} />;
  return <Shell me={me} onOut={() => setMe(null)} />;
}

render(<Root />, document.getElementById('root')!);
