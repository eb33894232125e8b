// The keeper (`portmap-hostip install --watch --cache-dir`) run in a node namespace for the e2e tests, its
// stdout and stderr collected.
import type { ChildProcess } from "node:child_process";
import { spawnInNs } from "./netns.js";
import { pluginBinary } from "./paths.js";

export interface RunningKeeper {
  child: ChildProcess;
  /** Everything it printed so far, stdout and stderr interleaved as they came. */
  output(): string;
}

export interface KeeperDirs {
  binDir: string;
  confDir: string;
  cacheDir: string;
  stateDir: string;
}

/**
 * Starts the keeper on `dirs` with `PATH` (the iptables variant the plugins use) and `extra` flags, and waits
 * until it watches (with --log-format json, until its JSON line says so).
 */
export async function startKeeper(
  node: string,
  dirs: KeeperDirs,
  resyncSeconds: number,
  path: string,
  extra: readonly string[] = [],
): Promise<RunningKeeper> {
  const args = [
    ...["install", "--watch", "--cni-bin-dir", dirs.binDir, "--cni-conf-dir", dirs.confDir],
    ...["--binary", pluginBinary(), "--cache-dir", dirs.cacheDir, "--state-dir", dirs.stateDir],
    ...["--resync", String(resyncSeconds), ...extra],
  ];
  const watching = `watching ${dirs.confDir}`;
  const ready = extra.includes("json") ? new RegExp(`"message":${JSON.stringify(watching)}`) : watching;
  // `env` gives the keeper the PATH of the plugins.
  const child = await spawnInNs(node, "env", [`PATH=${path}`, pluginBinary(), ...args], ready);
  let output = "";
  child.stdout?.on("data", (d: Buffer) => {
    output += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    output += d.toString();
  });
  return { child, output: () => output };
}
