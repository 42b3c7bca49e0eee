import type { Command } from 'commander';
import type { TokenRow } from '../../store/types.js';
import { Client, serverBase } from '../client.js';
import { printJson, run } from '../output.js';
import { stamp, table } from '../table.js';
import { saveProfile } from '../profile.js';

export function tokenCommands(program: Command): void {
  program
    .command('login')
    .description('save the server URL and token as a profile')
    .requiredOption('--server <url>', 'molt server URL, e.g. http://127.0.0.1:7070')
    .requiredOption('--token <token>', 'a token from `molt token create` or the server admin token')
    .option('--profile <name>', 'profile name', 'default')
    .option('-n, --namespace <ns>', 'default namespace for commands')
    .action(
      run(async (opts: { server: string; token: string; profile: string; namespace?: string }) => {
        const client = new Client(serverBase(opts.server), opts.token);
        const who = await client.request<{ namespace: string; role: string }>('GET', '/api/v1/whoami');
        const path = saveProfile(opts.profile, { server: opts.server, token: opts.token, namespace: opts.namespace ?? (who.namespace === '*' ? 'default' : who.namespace) });
        console.log(`logged in to ${opts.server} as ${who.role} of ${who.namespace === '*' ? 'the server' : who.namespace}; profile ${opts.profile} saved in ${path}`);
      }),
    );

  const token = program.command('token').description('manage API tokens');
  token
    .command('create')
    .description('create a token; it is shown once')
    .requiredOption('-n, --namespace <ns>', 'namespace the token acts in')
    .requiredOption('--role <role>', 'admin | deployer | invoker')
    .option('--name <name>', 'a label for the token')
    .option('--json', 'print JSON')
    .action(
      run(async (opts: { namespace: string; role: string; name?: string; json?: boolean }) => {
        const res = await Client.fromProfile().request<TokenRow & { token: string }>('POST', '/api/v1/tokens', { namespace: opts.namespace, role: opts.role, name: opts.name });
        if (opts.json) return printJson(res);
        console.log(`token ${res.id} (${res.role} of ${res.namespace}) — shown once, keep it safe:\n${res.token}`);
      }),
    );
  token
    .command('list')
    .description('list tokens')
    .option('-n, --namespace <ns>', 'only this namespace')
    .option('--json', 'print JSON')
    .action(
      run(async (opts: { namespace?: string; json?: boolean }) => {
        const q = opts.namespace ? `?namespace=${encodeURIComponent(opts.namespace)}` : '';
        const { tokens } = await Client.fromProfile().request<{ tokens: TokenRow[] }>('GET', `/api/v1/tokens${q}`);
        if (opts.json) return printJson(tokens);
        console.log(table(['ID', 'NAME', 'NAMESPACE', 'ROLE', 'CREATED_AT', 'REVOKED_AT'], tokens.map((t) => [t.id, t.name, t.namespace, t.role, stamp(t.createdAt), stamp(t.revokedAt)])));
      }),
    );
  token
    .command('revoke <id>')
    .description('revoke a token at once')
    .action(
      run(async (id: string) => {
        await Client.fromProfile().request('DELETE', `/api/v1/tokens/${encodeURIComponent(id)}`);
        console.log(`token ${id} revoked`);
      }),
    );
}
