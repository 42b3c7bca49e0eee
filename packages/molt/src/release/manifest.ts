/** The file in every release that describes it (ReleaseManifest). */
export const MANIFEST_FILE = 'molt-release.json';
