import Database from 'better-sqlite3';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MoltError } from '../errors.js';

/** What the holder of a data dir writes beside its lock, for a second server to name it. */
interface Holder {
  pid: number;
  startedAt: string;
  command: string;
}

/** The data dir's lock, held for the life of the process that took it. */
export interface DataDirLock {
  release(): void;
}

function describeHolder(dataDir: string): string {
  try {
    const h = JSON.parse(readFileSync(join(dataDir, 'server.pid'), 'utf8')) as Holder;
    let command = h.command;
    try {
      command = readFileSync(`/proc/${h.pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ') || command;
    } catch {
      // not on this machine's /proc: keep what it wrote
    }
    return `process ${h.pid} (${command}), running since ${h.startedAt}`;
  } catch {
    return 'another process';
  }
}

/**
 * Takes the data dir for this process, or throws naming the process that has it. The lock is an OS
 * file lock (SQLite holds an exclusive POSIX lock on `server.lock` while its transaction is open), so
 * it is released when the process ends however it ends; nothing stale is left to clean up. Taken
 * before anything in the data dir is read or written: a refused server changes nothing.
 */
export function lockDataDir(dataDir: string): DataDirLock {
  const db = new Database(join(dataDir, 'server.lock'), { timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code !== 'SQLITE_BUSY') throw err;
    throw new MoltError(
      'MOLT_ERR_DATA_DIR_IN_USE',
      `data dir ${dataDir} is in use by ${describeHolder(dataDir)}; stop that server first, or give this one another --data-dir`,
    );
  }
  const holder: Holder = { pid: process.pid, startedAt: new Date().toISOString(), command: process.argv.join(' ') };
  writeFileSync(join(dataDir, 'server.pid'), `${JSON.stringify(holder)}\n`);
  return { release: () => db.close() };
}
