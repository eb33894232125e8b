// The installer as a node runs it: the plugin copies itself into a CNI bin dir and inserts its entry after
// portmap in the conflist; a pod set up from that conflist is scoped; --uninstall takes both back.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it, onTestFinished } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  containerdMapping,
  describeRun,
  type NetConfList,
  NODE_IP1,
  NODE_IP2,
  whoAnswers,
} from "../support/harness.js";
import { pluginFile } from "../support/paths.js";
import { removeNodeRecords } from "../support/records.js";

describeAsRoot("installer", () => {
  const h = useHarness();

  it("installs itself after portmap, the installed list scopes a pod, --uninstall restores both", async () => {
    const binDir = join(h.topo.tmpDir, "opt-cni-bin");
    const confDir = join(h.topo.tmpDir, "net.d");
    mkdirSync(binDir);
    mkdirSync(confDir);
    const conflist = join(confDir, "10-bridge.conflist");
    const original = `${JSON.stringify(bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: false }), null, 2)}\n`;
    writeFileSync(conflist, original);
    const dirs = ["--cni-bin-dir", binDir, "--cni-conf-dir", confDir];

    const install = await h.operator(["install", ...dirs, "--default-host-ip", NODE_IP2]);
    expect(install.code, install.stderr).toBe(0);
    // The executable copied itself (under an emulator: the arm64 file, not the wrapper that runs it).
    expect(readFileSync(join(binDir, "portmap-hostip")).equals(readFileSync(pluginFile()))).toBe(true);
    const list = JSON.parse(readFileSync(conflist, "utf8")) as NetConfList;
    expect(list.plugins.map((p) => p.type)).toEqual(["bridge", "portmap", "portmap-hostip"]);
    expect(list.plugins[2]).toMatchObject({ defaultHostIP: NODE_IP2 });

    const { add, rt } = await h.startPod("inst", list, {
      portMappings: [containerdMapping(8080, 80)],
      serve: { tcp: [80] },
    });
    // The installed entry has no stateDir: the plugin's record of this ADD is in the node's default directory.
    onTestFinished(() => removeNodeRecords(list.name, [rt.containerID]));
    expect(add.ok, describeRun(add)).toBe(true);
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8080)).toBe("pod-inst");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8080)).toBeNull();

    const uninstall = await h.operator(["install", "--uninstall", ...dirs]);
    expect(uninstall.code, uninstall.stderr).toBe(0);
    expect(readFileSync(conflist, "utf8")).toBe(original);
    expect(readdirSync(binDir)).toEqual([]);
  });
});
