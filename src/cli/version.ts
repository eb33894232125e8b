// The build's version and commit, injected by scripts/build.mjs; absent when the sources run unbundled (tests).
declare const PORTMAP_HOSTIP_VERSION: string;
declare const PORTMAP_HOSTIP_COMMIT: string;
export const version = typeof PORTMAP_HOSTIP_VERSION === "string" ? PORTMAP_HOSTIP_VERSION : "0.0.0-dev";
export const commit = typeof PORTMAP_HOSTIP_COMMIT === "string" ? PORTMAP_HOSTIP_COMMIT : "unknown";
