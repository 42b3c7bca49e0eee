/** The names an app config may have, looked up in this order. */
export const CONFIG_FILES = ['molt.config.ts', 'molt.config.mts', 'molt.config.js', 'molt.config.mjs', 'molt.config.json', 'molt.config.yaml', 'molt.config.yml'];
