// The node's keeper (`install --watch --cache-dir`) with portmap v1.9.1's nftables backend, inside the test's
// node namespace on the real kernel: after `nft delete table` or `nft flush chain` of portmap's tables every
// cached pod's hostPorts answer again, scoped (portmap's ADD run again from the cache, then scoped), driven
// by the keeper's `nft monitor` alone; a dead pod's rules restored with an old ruleset go, and the live pod
// on its port answers. Runs in the 1.9.1-nftables run of scripts/test-portmap-matrix.
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  CLUSTER_IP,
  containerdMapping,
  describeRun,
  IS_ROOT,
  type NetConfList,
  NODE_IP1,
  nftPodRules,
  portmapVariant,
  type StartedPod,
  whoAnswers,
} from "../support/harness.js";
import { type RunningKeeper, startKeeper } from "../support/keeper.js";
import { nsRunOk } from "../support/netns.js";

const NFTABLES = process.env["PMH_PORTMAP"] === "1.9.1-nftables";
if (!NFTABLES)
  console.warn("keeper-nft.test.ts runs with PMH_PORTMAP=1.9.1-nftables (scripts/test-portmap-matrix): skipped here");

describe.skipIf(!IS_ROOT || !NFTABLES)("the keeper with portmap's nftables backend", () => {
  const h = useHarness({ libcniCache: true });
  let keeper: RunningKeeper;
  let list: NetConfList;
  const pods = new Map<string, StartedPod>();
  const asks = (host: string, port: number) => whoAnswers(h.topo.client, "tcp", host, port);
  const start = async (name: string, port: number) => {
    const pod = await h.startPod(name, list, { portMappings: [containerdMapping(port, 80)], serve: { tcp: [80] } });
    if (!pod.add.ok) throw new Error(describeRun(pod.add));
    pods.set(name, pod);
    return pod;
  };
  /** Both pods answer on the node IP and not on the Service's ClusterIP (scoped). */
  const bothScoped = async () =>
    (await asks(NODE_IP1, 8081)) === "pod-a" &&
    (await asks(NODE_IP1, 8082)) === "pod-b" &&
    (await asks(CLUSTER_IP, 8081)) === "service" &&
    (await asks(CLUSTER_IP, 8082)) === "service";

  beforeAll(async () => {
    expect(portmapVariant().backend).toBe("nftables");
    const stateDir = join(h.topo.tmpDir, "state");
    const confDir = join(h.topo.tmpDir, "net.d");
    // The node's CNI bin directory: portmap is there (the keeper runs its ADD again), the installer adds us.
    const binDir = join(h.topo.tmpDir, "bin");
    mkdirSync(confDir);
    mkdirSync(binDir);
    symlinkSync(portmapVariant().binary, join(binDir, "portmap"));
    list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { stateDir } });
    writeFileSync(join(confDir, "10-bridge.conflist"), JSON.stringify(list, null, 2));
    await h.topo.serveService({ tcp: [8081, 8082, 8090] });
    await start("a", 8081);
    await start("b", 8082);
    expect(await bothScoped()).toBe(true);
    // A resync longer than any wait here: what the tests see comes from nft monitor's events.
    keeper = await startKeeper(
      h.topo.node,
      { binDir, confDir, cacheDir: h.cacheDir!, stateDir },
      600,
      process.env["PATH"] ?? "",
    );
    await eventually("the keeper's first pass", async () => existsSync(join(stateDir, "keeper.alive")));
  });

  /** A pod's rules in `ip cni_hostport masquerading`, without their handles. */
  const masquerading = async (id: string) =>
    (await nsRunOk(h.topo.node, "nft", ["list", "chain", "ip", "cni_hostport", "masquerading"]))
      .split("\n")
      .filter((l) => l.endsWith(` comment "${id}"`))
      .map((l) => l.trim());

  afterAll(() => {
    if (keeper.child.exitCode === null) keeper.child.kill("SIGKILL");
  });

  it("after `nft delete table ip cni_hostport`, every cached pod answers again, scoped", async () => {
    await nsRunOk(h.topo.node, "nft", ["delete", "table", "ip", "cni_hostport"]);
    await eventually("both pods answer again, scoped", bothScoped);
    expect(keeper.output()).toMatch(
      /keeper \([^)]*\): nftables: default\/a \(cbr0, \S+\): ran portmap's ADD again .*re-scoped its nftables rules \(IPv4\)/,
    );
  });

  it("after `nft flush chain ip cni_hostport hostports`, every cached pod answers again, scoped", async () => {
    const before = await nftPodRules(h.topo.node, 4, pods.get("a")!.pod.containerID);
    const masqBefore = await masquerading(pods.get("a")!.pod.containerID);
    expect(masqBefore.length).toBeGreaterThan(0);
    await nsRunOk(h.topo.node, "nft", ["flush", "chain", "ip", "cni_hostport", "hostports"]);
    await eventually("both pods answer again, scoped", bothScoped);
    // portmap's rules written once more, scoped as before; its masquerading rules (not flushed) not twice.
    expect(await nftPodRules(h.topo.node, 4, pods.get("a")!.pod.containerID)).toEqual(before);
    expect(await masquerading(pods.get("a")!.pod.containerID)).toEqual(masqBefore);
  });

  it("after an old ruleset is restored, the dead pod's rules go at once and the live pod on its port answers", async () => {
    const old = await start("old", 8090);
    const saved = join(h.topo.tmpDir, "cni_hostport.nft");
    writeFileSync(saved, await nsRunOk(h.topo.node, "nft", ["list", "table", "ip", "cni_hostport"]));
    const del = await h.cni.del(list, old.rt);
    expect(del.ok, describeRun(del)).toBe(true);
    await h.topo.removePod(old.pod);
    pods.delete("old");
    await start("new", 8090);
    // The firewall's saved table: the old pod's rules, not the new pod's.
    await nsRunOk(h.topo.node, "nft", ["delete", "table", "ip", "cni_hostport"]);
    await nsRunOk(h.topo.node, "nft", ["-f", saved]);
    await eventually(
      "the new pod answers on the port, the dead pod's rules are gone",
      async () =>
        (await asks(NODE_IP1, 8090)) === "pod-new" &&
        (await nftPodRules(h.topo.node, 4, old.pod.containerID))?.length === 0,
    );
    expect(keeper.output()).toContain(`of dead container ${old.pod.containerID}`);
    expect(await bothScoped()).toBe(true);
  });

  it("ends with exit code 0 on SIGTERM", async () => {
    const exited = new Promise<number | null>((r) => keeper.child.once("exit", (code) => r(code)));
    keeper.child.kill("SIGTERM");
    expect(await exited).toBe(0);
    if (process.env["PMH_SHOW"]) console.log(keeper.output());
  });
});
