/**
 * Names of namespaces, apps and volumes: lower-case letters, digits and dashes, starting with a
 * letter, at most 63 characters (a DNS label). They become path segments on the server, so nothing
 * else is ever accepted.
 */
export const NAME = /^[a-z][a-z0-9-]{0,62}$/;

/** How a name must look, for error messages. */
export const NAME_RULE = 'lower-case letters, digits and dashes, starting with a letter (at most 63)';
