// The keeper (`portmap-hostip install --watch --cache-dir`) run in a node namespace for the e2e tests, its
// stdout and stderr collected.
import type { ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startInNs, stopChild } from "./netns.js";
import { pluginBinary } from "./paths.js";

export interface RunningKeeper {
  child: ChildProcess;
  /** Everything it printed so far, stdout and stderr interleaved as they came. */
  output(): string;
}

const READY_MS = 10_000;

export interface KeeperDirs {
  binDir: string;
  confDir: string;
  cacheDir: string;
  stateDir: string;
}

/** A conf dir holding `list` as the node's conflist and an empty bin dir, under `tmpDir`. */
export function keeperConfAndBin(tmpDir: string, list: object): { confDir: string; binDir: string } {
  const confDir = join(tmpDir, "net.d");
  const binDir = join(tmpDir, "bin");
  mkdirSync(confDir);
  mkdirSync(binDir);
  writeFileSync(join(confDir, "10-bridge.conflist"), JSON.stringify(list, null, 2));
  return { confDir, binDir };
}

/**
 * Starts the keeper on `dirs` with `PATH` (the plugins', or the one of a keeper in its image) and `extra` flags,
 * and waits until it watches (with --log-format json, until its JSON line says so).
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
  const ready = (line: string) =>
    extra.includes("json") ? line.includes(`"message":${JSON.stringify(watching)}`) : line === watching;
  // `env` gives the keeper the PATH of the plugins. Everything it prints is kept, also what comes before the
  // installer watches: the keeper's first pass runs beside the installer's copy of the binary.
  const child = startInNs(node, "env", [`PATH=${path}`, pluginBinary(), ...args]);
  let output = "";
  child.stdout?.on("data", (d: Buffer) => {
    output += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    output += d.toString();
  });
  const deadline = Date.now() + READY_MS;
  while (!output.split("\n").some(ready)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`the keeper did not watch ${dirs.confDir} within ${READY_MS} ms:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, output: () => output };
}
