import type { FastifyRequest } from 'fastify';
import { MoltError } from '../../errors.js';
import type { AppService } from '../app-service.js';
import type { Principal } from '../auth.js';
import type { ControlPlane } from '../control-plane.js';
import type { VolumeService } from '../volume-service.js';

/** What every API route module is given. */
export interface ApiContext {
  cp: ControlPlane;
  apps: AppService;
  volumes: VolumeService;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

/** The caller of an authenticated route (the auth hook has run). */
export function principal(req: FastifyRequest): Principal {
  if (!req.principal) throw new MoltError('MOLT_ERR_UNAUTHENTICATED', 'missing bearer token; send "Authorization: Bearer <token>"');
  return req.principal;
}

/** Writes newline-delimited JSON to a hijacked reply; returns a writer and a closed flag. */
export function ndjson(reply: import('fastify').FastifyReply): { write(v: unknown): void; end(): void; closed(): boolean } {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' });
  let closed = false;
  res.on('close', () => (closed = true));
  return {
    write: (v) => {
      if (!closed) res.write(`${JSON.stringify(v)}\n`);
    },
    end: () => {
      if (!closed) res.end();
    },
    closed: () => closed,
  };
}
