import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { appCommands } from './commands/app-commands.js';
import { namespaceCommands } from './commands/namespace-commands.js';
import { releaseCommands } from './commands/release-commands.js';
import { serverCommand } from './commands/server-command.js';
import { tokenCommands } from './commands/token-commands.js';
import { volumeCommands } from './commands/volume-commands.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

/** The `molt` command line: a thin client of the HTTP API, except `server`, `app run` and `release build`. */
export async function main(argv: string[]): Promise<void> {
  const program = new Command('molt')
    .description('Run Node.js web services and update them while they stay online.')
    .version(pkg.version)
    .showHelpAfterError()
    .addHelpText('after', '\nServer and token: `molt login`, or MOLT_SERVER and MOLT_TOKEN.');
  serverCommand(program);
  tokenCommands(program);
  namespaceCommands(program);
  appCommands(program);
  releaseCommands(program);
  volumeCommands(program);
  await program.parseAsync(argv);
}
