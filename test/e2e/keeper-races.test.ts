// reconcile and gc interleaved with a runtime's ADD and DEL, deterministically: a stand-in plugin in the chain
// stops mid-chain (it waits for a file) so that the operator command runs exactly
//   - during a DEL, after portmap's DEL and before libcni drops the cache entry: reconcile must not bring
//     the dead pod's chain back;
//   - during an ADD, after our ADD and before libcni writes the cache entry: gc --grace must keep the chain.
// On iptables-nft and iptables-legacy.
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeAsRoot, eventually, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  containerdMapping,
  describeRun,
  dnChainName,
  type NetConfList,
  natSave,
} from "../support/harness.js";
import { SYSTEM_CNI_DIR } from "../support/paths.js";

const PAUSE = "pause-standin";

/** A pass-through CNI plugin that, when <dir>/pause-<COMMAND> exists, says so in paused-<COMMAND> and waits for resume-<COMMAND>. */
function writePausePlugin(dir: string): void {
  const script = `#!${process.execPath}
const fs = require("node:fs");
const dir = ${JSON.stringify(dir)};
const command = process.env.CNI_COMMAND;
const conf = JSON.parse(fs.readFileSync(0, "utf8"));
if (fs.existsSync(dir + "/pause-" + command)) {
  fs.writeFileSync(dir + "/paused-" + command, "");
  const deadline = Date.now() + 30000;
  while (!fs.existsSync(dir + "/resume-" + command) && Date.now() < deadline) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
}
if (command === "ADD") process.stdout.write(JSON.stringify(conf.prevResult));
`;
  writeFileSync(join(dir, PAUSE), script, { mode: 0o755 });
}

describeAsRoot.each([
  ["iptables-nft", false],
  ["iptables-legacy", true],
])("reconcile and gc against a pod mid-ADD or mid-DEL, with %s", (_name, legacy) => {
  const pluginDir = join("/tmp", `pmh-pause-${process.pid}-${legacy ? "legacy" : "nft"}`);
  mkdirSync(pluginDir, { recursive: true });
  writePausePlugin(pluginDir);
  const h = useHarness({ libcniCache: true, legacyIptables: legacy, cniPath: [SYSTEM_CNI_DIR, pluginDir] });
  let stateDir: string;
  const chainsIn = async (chain: string) =>
    (await natSave(h.topo.node, 4, h.iptables)).filter((l) => l.includes(chain));

  beforeAll(() => {
    stateDir = join(h.topo.tmpDir, "state");
  });
  afterAll(() => rmSync(pluginDir, { recursive: true, force: true }));

  /** bridge → (stand-in) → portmap → ours → (stand-in): `at` says where the stand-in sits. */
  function list(at: "before-portmap" | "last"): NetConfList {
    const base = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { stateDir } });
    const plugins = [...base.plugins];
    plugins.splice(at === "last" ? plugins.length : 1, 0, { type: PAUSE });
    return { ...base, plugins };
  }

  async function pausedAt(command: string, action: () => Promise<unknown>): Promise<void> {
    await eventually(
      `the stand-in pauses the ${command}`,
      async () => existsSync(join(pluginDir, `paused-${command}`)),
      30_000,
    );
    try {
      await action();
    } finally {
      writeFileSync(join(pluginDir, `resume-${command}`), "");
    }
  }

  it("reconcile run between portmap's DEL and the cache drop does not bring the pod's chain back", async () => {
    const l = list("before-portmap");
    const pod = await h.startPod("del", l, { portMappings: [containerdMapping(8085, 80)] });
    expect(pod.add.ok, describeRun(pod.add)).toBe(true);
    const chain = dnChainName(l.name, pod.pod.containerID);
    expect(await chainsIn(chain)).not.toEqual([]);
    writeFileSync(join(pluginDir, "pause-DEL"), "");
    const del = h.cni.del(l, pod.rt);
    let reconciled = "";
    await pausedAt("DEL", async () => {
      // Reverse order: ours, portmap (chain gone), the stand-in (paused); the cache entry is still there.
      expect(existsSync(h.cni.cacheFilePath(l, pod.rt))).toBe(true);
      const r = await h.operator(["reconcile", "--cache-dir", h.cacheDir!, "--state-dir", stateDir]);
      reconciled = `${r.stdout}${r.stderr}`;
      expect(await chainsIn(chain), reconciled).toEqual([]);
    });
    expect((await del).ok).toBe(true);
    expect(await chainsIn(chain), reconciled).toEqual([]);
  });

  it("gc --grace run while the pod's ADD is still in the chain keeps its chain", async () => {
    const l = list("last");
    writeFileSync(join(pluginDir, "pause-ADD"), "");
    const started = h.startPod("add", l, { portMappings: [containerdMapping(8086, 80)] });
    await pausedAt("ADD", async () => {
      expect((await natSave(h.topo.node, 4, h.iptables)).some((x) => x.includes("8086"))).toBe(true);
      const r = await h.operator([
        "gc",
        "--cache-dir",
        h.cacheDir!,
        "--state-dir",
        stateDir,
        "--network",
        l.name,
        "--grace",
        "1",
      ]);
      expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout).toContain("no orphan portmap chains");
    });
    const pod = await started;
    expect(pod.add.ok, describeRun(pod.add)).toBe(true);
    expect(await chainsIn(dnChainName(l.name, pod.pod.containerID))).not.toEqual([]);
  });
});
