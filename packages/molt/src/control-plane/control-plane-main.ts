/**
 * The control plane's process, started (and restarted) by the data plane:
 * `node control-plane-main.js <data-dir>`, with its options in MOLT_CONTROL_PLANE_OPTIONS.
 */
import { MoltError } from '../errors.js';
import { type ControlPlaneProcess, runControlPlane, type ServerOptions } from './server.js';

const dataDir = process.argv[2]!;
process.title = `molt: control-plane ${dataDir}`;
const opts = { ...(JSON.parse(process.env.MOLT_CONTROL_PLANE_OPTIONS ?? '{}') as ServerOptions), dataDir };
delete process.env.MOLT_CONTROL_PLANE_OPTIONS;

let running: ControlPlaneProcess | undefined;
let stopping = false;

async function stop(code: number, keepWorkers = false): Promise<never> {
  if (!stopping) {
    stopping = true;
    await running?.close({ keepWorkers }).catch(() => {});
  }
  process.exit(code);
}

process.once('SIGTERM', () => void stop(0));
process.once('SIGINT', () => void stop(0));
// The data plane hands over (a takeover) or stops with --keep-workers: the workers are left be.
process.once('SIGUSR2', () => void stop(0, true));

try {
  running = await runControlPlane(opts);
  // Without its data plane there is nothing to control: it exits and the next data plane starts another.
  running.cp.dp.peer.onClose(() => {
    if (!stopping) process.exit(1);
  });
} catch (err) {
  if (err instanceof MoltError) console.error(`error [${err.code}]: ${err.message}`);
  else console.error(`error: the control plane could not start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
}
