import { readFileSync } from 'node:fs';
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import { MoltError } from '../errors.js';

/** A certificate and its key, as PEM files. */
export interface CertFiles {
  cert: string;
  key: string;
}

/** HTTPS for the server's port: a default certificate, and others chosen by SNI for their hostnames. */
export interface TlsFiles extends CertFiles {
  /** `host` may be a name (`shop.example.com`) or a wildcard of one label (`*.apps.example.com`). */
  sni: (CertFiles & { host: string })[];
}

function read(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new MoltError('MOLT_ERR_BAD_REQUEST', `cannot read the TLS ${what} ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); give the path of a PEM file`);
  }
}

function context(files: CertFiles, flag: string): SecureContextOptions {
  const options = { cert: read(files.cert, 'certificate'), key: read(files.key, 'key') };
  try {
    createSecureContext(options);
  } catch (err) {
    throw new MoltError('MOLT_ERR_BAD_REQUEST', `${flag}: the certificate ${files.cert} and key ${files.key} do not make a TLS context (${(err as Error).message}); give a PEM certificate and the private key it was made for`);
  }
  return options;
}

/**
 * The server options of node:https for `files`: the default certificate, and an SNICallback that
 * picks a hostname's own certificate (exact name first, then a wildcard of its first label). Every
 * file is read and checked now, so a bad one stops the start with its name, not the first handshake.
 */
export function tlsServerOptions(files: TlsFiles): SecureContextOptions & { SNICallback?: (host: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void } {
  const base = context(files, '--tls-cert/--tls-key');
  if (files.sni.length === 0) return base;
  const byHost = new Map<string, SecureContext>();
  for (const s of files.sni) byHost.set(s.host.toLowerCase(), createSecureContext(context(s, `--tls-sni ${s.host}`)));
  const fallback = createSecureContext(base);
  return {
    ...base,
    SNICallback(servername, cb) {
      const host = servername.toLowerCase();
      const dot = host.indexOf('.');
      cb(null, byHost.get(host) ?? (dot > 0 ? byHost.get(`*${host.slice(dot)}`) : undefined) ?? fallback);
    },
  };
}
