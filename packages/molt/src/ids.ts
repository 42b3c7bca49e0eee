import { createHash, randomBytes } from 'node:crypto';

const ALPHABET = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';

/** A random 22-character base58 id, the shape `molt worker list` shows (`kEEBkaoEaZrxPgzab2ChjQ`). */
export function newId(length = 22): string {
  const bytes = randomBytes(length);
  let out = '';
  // 256 % 58 leaves a slight bias; ids need uniqueness, not uniformity.
  for (const b of bytes) out += ALPHABET[b % 58];
  return out;
}

/** A new secret token; only its hash is stored. */
export function newToken(): string {
  return `molt_${newId(32)}`;
}

export function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
