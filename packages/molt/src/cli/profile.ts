import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

export interface Profile {
  server: string;
  token: string;
  namespace?: string;
}

interface ProfileFile {
  current: string;
  profiles: Record<string, Profile>;
}

/** `$XDG_CONFIG_HOME/molt/profiles.json`, or `~/.config/molt/profiles.json`. */
export function profilePath(): string {
  const base = process.env.MOLT_CONFIG_DIR ?? join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'molt');
  return join(base, 'profiles.json');
}

function readFile(): ProfileFile {
  const path = profilePath();
  if (!existsSync(path)) return { current: 'default', profiles: {} };
  return JSON.parse(readFileSync(path, 'utf8')) as ProfileFile;
}

/** Saves a profile and makes it current. The file holds tokens, so it is 0600. */
export function saveProfile(name: string, profile: Profile): string {
  const file = readFile();
  file.profiles[name] = profile;
  file.current = name;
  const path = profilePath();
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
  return path;
}

/** The profile in use: MOLT_SERVER and MOLT_TOKEN override the saved one. */
export function currentProfile(name?: string): Partial<Profile> {
  const file = readFile();
  const saved = file.profiles[name ?? process.env.MOLT_PROFILE ?? file.current] ?? {};
  return {
    ...saved,
    ...(process.env.MOLT_SERVER ? { server: process.env.MOLT_SERVER } : {}),
    ...(process.env.MOLT_TOKEN ? { token: process.env.MOLT_TOKEN } : {}),
  };
}
