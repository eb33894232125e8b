// The node's keeper (`install --watch --cache-dir`), running inside the test's node namespace on the real
// kernel, with iptables-nft and iptables-legacy: pods that started while our entry was missing get scoped,
// a flushed or restored nat table comes back (a dead pod's chain never takes a live pod's port), "node"
// pods follow a node address; SIGTERM ends it with 0. Every wait polls up to a deadline; none is timed.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeAsRoot, eventually, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  CLUSTER_IP,
  containerdMapping,
  describeRun,
  dnChainName,
  type NetConfList,
  NODE_IP1,
  natSave,
  type StartedPod,
  whoAnswers,
  withoutPlugin,
} from "../support/harness.js";
import { type RunningKeeper, startKeeper } from "../support/keeper.js";
import { nsRunOk } from "../support/netns.js";

const NEW_IP = "192.0.2.12";

describeAsRoot.each([
  ["iptables-nft", false],
  ["iptables-legacy", true],
])("the keeper with %s", (_name, legacy) => {
  const h = useHarness({ libcniCache: true, legacyIptables: legacy });
  let keeper: RunningKeeper;
  let list: NetConfList;
  let confDir: string;
  let stateDir: string;
  const pods = new Map<string, StartedPod>();
  const tool = legacy ? "iptables-legacy" : "iptables-nft";
  const asks = (host: string, port: number) => whoAnswers(h.topo.client, "tcp", host, port);

  beforeAll(async () => {
    stateDir = join(h.topo.tmpDir, "state");
    confDir = join(h.topo.tmpDir, "net.d");
    const binDir = join(h.topo.tmpDir, "bin");
    mkdirSync(confDir);
    mkdirSync(binDir);
    list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { stateDir } });
    // The network plugin has just rewritten the conflist: our entry is missing, and a pod starts.
    writeFileSync(join(confDir, "10-bridge.conflist"), JSON.stringify(withoutPlugin(list), null, 2));
    const lost = await h.startPod("lost", withoutPlugin(list), {
      portMappings: [containerdMapping(8080, 80)],
      serve: { tcp: [80] },
    });
    if (!lost.add.ok) throw new Error(describeRun(lost.add));
    pods.set("lost", lost);
    await h.topo.serveService({ tcp: [8080, 8081, 8090] });
    // Unscoped: the pod takes the Service's ClusterIP port too.
    expect(await asks(CLUSTER_IP, 8080)).toBe("pod-lost");

    keeper = await startKeeper(
      h.topo.node,
      { binDir, confDir, cacheDir: h.cacheDir!, stateDir },
      5,
      h.iptables.path ?? process.env["PATH"] ?? "",
    );
  });

  afterAll(() => {
    if (keeper.child.exitCode === null) keeper.child.kill("SIGKILL");
  });

  it("puts the entry back and scopes the pod that started without it, by its own entry options", async () => {
    await eventually(
      "the pod that started without our entry is scoped",
      async () => (await asks(CLUSTER_IP, 8080)) === "service" && (await asks(NODE_IP1, 8080)) === "pod-lost",
    );
    expect(keeper.output()).toMatch(/added the entry after portmap/);
    expect(keeper.output()).toMatch(
      /keeper \([^)]*\): (?:iptables-\w+ )?IPv4: default\/lost \(cbr0, \S+\): rewrote \(\d+ rules\) CNI-DN-/,
    );
  });

  it("brings every cached pod's hostPorts back, scoped, after a nat flush", async () => {
    const b = await h.startPod("b", list, { portMappings: [containerdMapping(8081, 80)], serve: { tcp: [80] } });
    expect(b.add.ok, describeRun(b.add)).toBe(true);
    pods.set("b", b);
    for (const flag of ["-F", "-X"]) await nsRunOk(h.topo.node, tool, ["-w", "-t", "nat", flag]);
    expect(await asks(NODE_IP1, 8081)).not.toBe("pod-b");
    await eventually(
      "both pods answer again, scoped",
      async () =>
        (await asks(NODE_IP1, 8080)) === "pod-lost" &&
        (await asks(NODE_IP1, 8081)) === "pod-b" &&
        (await asks(CLUSTER_IP, 8080)) === "service" &&
        (await asks(CLUSTER_IP, 8081)) === "service",
    );
  });

  it("after an old table is restored, the dead pod's chain goes at once and the live pod on its port answers", async () => {
    const old = await h.startPod("old", list, { portMappings: [containerdMapping(8090, 80)], serve: { tcp: [80] } });
    expect(old.add.ok, describeRun(old.add)).toBe(true);
    const saved = await nsRunOk(h.topo.node, `${tool}-save`, ["-t", "nat"]);
    const del = await h.cni.del(list, old.rt);
    expect(del.ok, describeRun(del)).toBe(true);
    await h.topo.removePod(old.pod);
    const replacement = await h.startPod("new", list, {
      portMappings: [containerdMapping(8090, 80)],
      serve: { tcp: [80] },
    });
    expect(replacement.add.ok, describeRun(replacement.add)).toBe(true);
    pods.set("new", replacement);
    // The firewall's saved table: the old pod's chain and jump, not the new pod's.
    await nsRunOk(h.topo.node, `${tool}-restore`, [], { input: saved });
    const oldChain = dnChainName(list.name, old.pod.containerID);
    await eventually(
      "the new pod answers on the port, the dead chain is gone",
      async () =>
        (await asks(NODE_IP1, 8090)) === "pod-new" &&
        !(await natSave(h.topo.node, 4, h.iptables)).some((l) => l.includes(oldChain)),
    );
    expect(keeper.output()).toContain(`deleted dead ${oldChain}`);
  });

  it("follows a node address that comes and goes (defaultHostIP node)", async () => {
    await nsRunOk(h.topo.node, "ip", ["addr", "add", `${NEW_IP}/24`, "dev", "uplink"]);
    await eventually(
      `the pods answer on ${NEW_IP}`,
      async () => (await asks(NEW_IP, 8081)) === "pod-b" && (await asks(NEW_IP, 8080)) === "pod-lost",
    );
    await nsRunOk(h.topo.node, "ip", ["addr", "del", `${NEW_IP}/24`, "dev", "uplink"]);
    await eventually(
      `no rule names ${NEW_IP} any more`,
      async () => !(await natSave(h.topo.node, 4, h.iptables)).some((l) => l.includes(NEW_IP)),
    );
  });

  it("ends with exit code 0 on SIGTERM", async () => {
    const exited = new Promise<number | null>((r) => keeper.child.once("exit", (code) => r(code)));
    keeper.child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(keeper.output()).toContain("stopped\n");
    if (process.env["PMH_SHOW"]) console.log(keeper.output());
  });
});
