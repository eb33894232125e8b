// A node laid out in a temporary directory for the installer's tests: an empty CNI bin directory, and the conf
// directory as flannel's install-cni container leaves it (its real conflist, test/fixtures/flannel). The paths
// are live bindings, laid anew before each test of a file that calls useFlannelNode().
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach } from "vitest";
import { type InstallContext, runInstall } from "../../../src/cli/install.js";

const FLANNEL = join(import.meta.dirname, "../../fixtures/flannel/cni-conf.json");
export const CAPABILITIES = { portMappings: true, "io.kubernetes.cri.pod-annotations": true };

export let root: string;
export let binDir: string;
export let confDir: string;
export let conflist: string;
export let binary: string;
export let flannel: string;

/** Lays the node out before each test of the calling file, and removes it after. */
export function useFlannelNode(): void {
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "portmap-hostip-install-"));
    binDir = join(root, "opt/cni/bin");
    confDir = join(root, "etc/cni/net.d");
    await mkdir(binDir, { recursive: true });
    await mkdir(confDir, { recursive: true });
    flannel = await readFile(FLANNEL, "utf8");
    // What flannel's install-cni container writes: the ConfigMap's cni-conf.json, unchanged.
    conflist = join(confDir, "10-flannel.conflist");
    await writeFile(conflist, flannel);
    binary = join(root, "portmap-hostip-linux-x64");
    await writeFile(binary, "#!/bin/sh\necho plugin\n");
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });
}

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** `portmap-hostip install --binary <binary> args…` on the node. */
export async function install(args: string[], context: InstallContext = {}): Promise<Run> {
  const run: Run = { code: 0, stdout: "", stderr: "" };
  run.code = await runInstall(["--binary", binary, ...args], {
    root,
    stdout: (text) => void (run.stdout += text),
    stderr: (text) => void (run.stderr += text),
    ...context,
  });
  return run;
}

/** The plugins list of a conflist (default: flannel's). */
export async function plugins(file = conflist): Promise<Array<Record<string, unknown>>> {
  return JSON.parse(await readFile(file, "utf8")).plugins;
}

export async function until(condition: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
