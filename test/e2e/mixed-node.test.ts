// Nodes where the two iptables variants both hold rules, on the real kernel with real packets.
//
// A mixed node, as Talos 1.7 and 1.8 are: kubelet and kube-proxy run iptables-nft (kubelet's KUBE-IPTABLES-HINT
// chain in nft's mangle table, kube-proxy's chains in nft's nat table) while the CNI plugins on the host run
// iptables-legacy, so portmap writes to legacy's nat table. ADD, the keeper (as the DaemonSet runs it, its own
// `iptables` the nft one of its image), status, reconcile, gc and portmap's DEL all work in legacy's table and
// write nothing of the pods' in nft's.
//
// A node migrating between variants: kube-proxy's rules and portmap's chains in both, and pods from before this
// version (no record of their ADD's variant). Each pod stays where its rules are; one that nothing places is
// refused, naming the flag that settles it.
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { recordPath } from "../../src/host/record.js";
import { describeAsRoot, eventually, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  CLUSTER_IP,
  containerdMapping,
  describeRun,
  dnChainName,
  type Harness,
  type NetConfList,
  NODE_IP1,
  NODE_IP2,
  natSave,
  pluginBinary,
  rulesIn,
  type StartedPod,
  stateDirFor,
  whoAnswers,
} from "../support/harness.js";
import { keeperConfAndBin, type RunningKeeper, startKeeper } from "../support/keeper.js";
import { nsRun, nsRunOk } from "../support/netns.js";
import { pluginPath } from "../support/paths.js";

// kube-proxy's part of a nat table (IPVS mode: its ClusterIPs are local addresses on kube-ipvs0) and kubelet's.
const KUBE_NAT = [
  "*nat",
  ":KUBE-SERVICES - [0:0]",
  ":KUBE-POSTROUTING - [0:0]",
  ":KUBE-MARK-MASQ - [0:0]",
  '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
  '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
  '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
  "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
  "-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE",
  `-A KUBE-SERVICES ! -s 10.244.0.0/16 -d ${CLUSTER_IP}/32 -p tcp -m tcp --dport 8080 -j KUBE-MARK-MASQ`,
  "COMMIT",
  "",
].join("\n");
const KUBELET_HINT = ["*mangle", ":KUBE-IPTABLES-HINT - [0:0]", "COMMIT", ""].join("\n");

/** Stages kubelet's and kube-proxy's rules in one variant's tables of the node. */
async function stageKube(h: Harness, variant: "nft" | "legacy", hint: boolean): Promise<void> {
  await nsRunOk(h.topo.node, `iptables-${variant}-restore`, ["-w", "--noflush"], { input: KUBE_NAT });
  if (hint) await nsRunOk(h.topo.node, `iptables-${variant}-restore`, ["-w", "--noflush"], { input: KUBELET_HINT });
}

/** One variant's nat table (both families), as iptables-save prints it. */
async function natOf(h: Harness, variant: "nft" | "legacy"): Promise<string[]> {
  const path = variant === "legacy" ? h.iptables.path : pluginPath();
  const [v4, v6] = await Promise.all([natSave(h.topo.node, 4, { path }), natSave(h.topo.node, 6, { path })]);
  return [...v4, ...v6];
}
const portmapLines = (save: readonly string[]) => save.filter((l) => /CNI-/.test(l));
const destination = (rule: string) => / -d (\S+)/.exec(rule)?.[1];
// portmap's three rules per mapping (hairpin mark, localhost mark, DNAT) for each address "node" scopes to.
const SCOPED = [NODE_IP1, NODE_IP2, "127.0.0.1"].flatMap((ip) => Array(3).fill(`${ip}/32`));

/** A firewall reload of one variant: every nat rule and user chain gone, both families. */
async function flushNat(h: Harness, variant: "nft" | "legacy"): Promise<void> {
  for (const tool of [`iptables-${variant}`, `ip6tables-${variant}`])
    for (const flag of ["-F", "-X"]) await nsRunOk(h.topo.node, tool, ["-w", "-t", "nat", flag]);
}

/**
 * Pods a (hostPort 8080) and b (8081) started through the plugins' iptables, and the Service listening on the
 * ClusterIP on both ports.
 */
async function startPods(h: Harness, pods: Map<string, StartedPod>): Promise<{ list: NetConfList; stateDir: string }> {
  const list = bridgeConflist({ dataDir: h.topo.ipamDataDir });
  await h.topo.serveService({ tcp: [8080, 8081] });
  for (const [name, port] of [
    ["a", 8080],
    ["b", 8081],
  ] as const) {
    const p = await h.startPod(name, list, { portMappings: [containerdMapping(port, 80)], serve: { tcp: [80] } });
    if (!p.add.ok) throw new Error(describeRun(p.add));
    pods.set(name, p);
  }
  return { list, stateDir: stateDirFor(h.topo.ipamDataDir) };
}

/** The binary as an operator runs it on the node, with `iptables` on its PATH the nft one (Debian's default). */
function operator(h: Harness, args: readonly string[]) {
  return nsRun(h.topo.node, pluginBinary(), args, { env: { PATH: pluginPath() }, timeoutMs: 60_000 });
}

describeAsRoot("a mixed node: kubelet and kube-proxy on iptables-nft, the CNI plugins on iptables-legacy", () => {
  const h = useHarness({ libcniCache: true, legacyIptables: true });
  let list: NetConfList;
  let stateDir: string;
  let keeper: RunningKeeper;
  const pods = new Map<string, StartedPod>();
  const asks = (host: string, port: number) =>
    whoAnswers(h.topo.client, "tcp", host, port, { timeoutMs: 700, attempts: 1 });
  const dirs = () => ["--cache-dir", h.cacheDir!, "--state-dir", stateDir];
  const chainOf = (name: string) => dnChainName(list.name, pods.get(name)!.pod.containerID);
  const answersScoped = async () =>
    (await asks(NODE_IP1, 8080)) === "pod-a" &&
    (await asks(NODE_IP1, 8081)) === "pod-b" &&
    (await asks(CLUSTER_IP, 8080)) === "service" &&
    (await asks(CLUSTER_IP, 8081)) === "service";
  let nftBefore: string[];

  beforeAll(async () => {
    await stageKube(h, "nft", true);
    ({ list, stateDir } = await startPods(h, pods));
    nftBefore = await natOf(h, "nft");
  });

  afterAll(() => {
    if (keeper && keeper.child.exitCode === null) keeper.child.kill("SIGKILL");
  });

  it("ADD scopes portmap's chain in legacy's nat table, records legacy, and writes nothing in nft's", async () => {
    const legacy = await natOf(h, "legacy");
    expect(rulesIn(legacy, chainOf("a")).map(destination)).toEqual(SCOPED);
    expect(portmapLines(nftBefore)).toEqual([]);
    expect(nftBefore.filter((l) => l.startsWith("-A KUBE-"))).toHaveLength(3);
    expect(await answersScoped()).toBe(true);
    const record = JSON.parse(readFileSync(recordPath(stateDir, list.name, pods.get("a")!.pod.containerID), "utf8"));
    expect(record).toMatchObject({ state: "added", iptables: "legacy" });
  });

  it("the keeper as the DaemonSet runs it (--iptables auto, nft its own iptables) rebuilds them in legacy only after legacy's nat table is flushed", async () => {
    const dirs = { ...keeperConfAndBin(h.topo.tmpDir, list), cacheDir: h.cacheDir!, stateDir };
    keeper = await startKeeper(h.topo.node, dirs, 5, pluginPath(), ["--iptables", "auto"]);
    // Pod b as if it had started before this version: its ADD left no record of its variant. The keeper saw its
    // chain in legacy before the flush.
    rmSync(recordPath(stateDir, list.name, pods.get("b")!.pod.containerID));
    // A complete pass leaves its heartbeat: the keeper has seen both chains in legacy.
    await eventually("the keeper's first pass", async () => existsSync(join(stateDir, "keeper.alive")));
    await flushNat(h, "legacy");
    expect(await asks(NODE_IP1, 8080)).toBeNull();
    await eventually("both pods answer again, scoped, the Service on its ClusterIP", answersScoped);
    const legacy = await natOf(h, "legacy");
    expect(rulesIn(legacy, chainOf("b")).map(destination)).toEqual(SCOPED);
    const exited = new Promise<number | null>((r) => keeper.child.once("exit", (code) => r(code)));
    keeper.child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(await natOf(h, "nft")).toEqual(nftBefore);
    expect(keeper.output()).toMatch(/keeper \([^)]*\): iptables-legacy IPv4: default\/a \(cbr0, \S+\): created/);
    expect(keeper.output()).not.toMatch(/iptables-nft IPv4/);
  });

  it("status, with nft as its iptables, lists every pod and its table; warns when both variants hold hostPort rules", async () => {
    const json = await operator(h, ["status", "--json", ...dirs()]);
    expect(json.code, json.stderr).toBe(0);
    const { mappings, warnings } = JSON.parse(json.stdout) as {
      mappings: Array<{ pod: string; hostPort: number; state: string; backend: string; destinations: string[] }>;
      warnings: string[];
    };
    expect(mappings.map((m) => [m.pod, m.hostPort, m.state, m.backend])).toEqual([
      ["default/a", 8080, "scoped", "iptables-legacy"],
      ["default/b", 8081, "scoped", "iptables-legacy"],
    ]);
    expect(warnings).toEqual([]);
    const table = await operator(h, ["status", ...dirs()]);
    expect(table.stdout).toMatch(/^POD +PORT +MATCHES +TO +STATE +TABLE\n/);
    expect(table.stdout).toMatch(/default\/a +8080\/tcp +192\.0\.2\.10 .* scoped +legacy\n/);
    // A chain and its jump that some pod's portmap left in nft's table.
    const stray = dnChainName(list.name, "stray0");
    await nsRunOk(h.topo.node, "iptables-nft-restore", ["-w", "--noflush"], {
      input: [
        "*nat",
        ":CNI-HOSTPORT-DNAT - [0:0]",
        `:${stray} - [0:0]`,
        `-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"${list.name}\\" id: \\"stray0\\"" -m multiport --dports 9090 -j ${stray}`,
        `-A ${stray} -p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.244.1.250:80`,
        "COMMIT",
        "",
      ].join("\n"),
    });
    const both = await operator(h, ["status", ...dirs()]);
    expect(both.stderr).toContain(
      "iptables-legacy and iptables-nft both hold hostPort rules: portmap reads and deletes them in one only",
    );
    expect(both.stdout).toMatch(/stray0 +9090\/tcp .* orphan +nft\n/);
    await flushNat(h, "nft");
    await stageKube(h, "nft", false);
    expect(await natOf(h, "nft")).toEqual(nftBefore);
  });

  it("reconcile acts in legacy, where the pods' ADD ran (b's by the node's other ADDs), though its own iptables is nft", async () => {
    await flushNat(h, "legacy");
    const r = await operator(h, ["reconcile", ...dirs()]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    // b, with no record, after the second look (what reconcile prints is its last pass).
    expect(r.stdout).toMatch(/iptables-legacy IPv4: default\/b \(cbr0, \S+\): created/);
    expect(r.stdout).not.toContain("iptables-nft");
    const legacy = await natOf(h, "legacy");
    for (const name of ["a", "b"]) expect(rulesIn(legacy, chainOf(name)).map(destination)).toEqual(SCOPED);
    expect(await answersScoped()).toBe(true);
    expect(await natOf(h, "nft")).toEqual(nftBefore);
  });

  it("gc deletes a dead pod's chain in legacy", async () => {
    const gone = pods.get("b")!;
    rmSync(h.cni.cacheFilePath(list, gone.rt));
    const r = await operator(h, ["gc", "--grace", "0", ...dirs()]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`iptables-legacy IPv4: deleted ${chainOf("b")} (network cbr0,`);
    expect(portmapLines(await natOf(h, "legacy")).some((l) => l.includes(chainOf("b")))).toBe(false);
  });

  it("portmap's DEL removes everything: nothing of the pods is left in either variant", async () => {
    for (const p of pods.values()) {
      const del = await h.cni.del(list, p.rt);
      expect(del.ok, describeRun(del)).toBe(true);
    }
    const legacy = await natOf(h, "legacy");
    for (const name of pods.keys()) expect(legacy.filter((l) => l.includes(chainOf(name)))).toEqual([]);
    expect(legacy.filter((l) => l.includes("CNI-DN-"))).toEqual([]);
    expect(await natOf(h, "nft")).toEqual(nftBefore);
  });
});

describeAsRoot("a dual-stack pod with two TCP hostPorts, its plugins on iptables-legacy", () => {
  const h = useHarness({ libcniCache: true, legacyIptables: true });

  // ip6tables-legacy 1.8.9's `-C` finds a rule of another port of the same protocol, and portmap appends only the
  // rules `-C` does not find: its IPv6 chain has the first hostPort alone. Scoped as it is, the pod would start
  // without the second in IPv6, silently; ADD refuses it (102) with the cause, and changes nothing.
  it("portmap writes only the first in IPv6; ADD refuses the pod (102) naming the missing port and why, changing nothing", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true });
    const p = await h.startPodObserved("two", list, {
      portMappings: [containerdMapping(8085, 80), containerdMapping(8086, 80)],
    });
    const chain = dnChainName(list.name, p.pod.containerID);
    const dnatPorts = (save: readonly string[]) =>
      rulesIn(save, chain)
        .filter((l) => l.includes("-j DNAT"))
        .map((l) => / --dport (\d+)/.exec(l)?.[1]);
    expect(dnatPorts(p.before.v4)).toEqual(["8085", "8086"]);
    expect(dnatPorts(p.before.v6)).toEqual(["8085"]);
    expect(p.add.ok).toBe(false);
    expect(p.ours.stdout).toMatch(/"code":102/);
    expect(p.ours.stdout).toContain("no portmap rule for hostPort 8086/tcp of pod default/two");
    expect(p.ours.stdout).toContain("the pod's other hostPorts have their rules there: portmap skips a rule");
    expect(p.after).toEqual(p.before);
    const del = await h.cni.del(list, p.rt);
    expect(del.ok, describeRun(del)).toBe(true);
    const after = await natOf(h, "legacy");
    expect(after.filter((l) => l.includes(chain))).toEqual([]);
  });
});

describeAsRoot("a node migrating between variants: kube-proxy's rules and portmap's chains in both", () => {
  const h = useHarness({ libcniCache: true, legacyIptables: true });
  let list: NetConfList;
  let stateDir: string;
  const pods = new Map<string, StartedPod>();
  const dirs = () => ["--cache-dir", h.cacheDir!, "--state-dir", stateDir];

  beforeAll(async () => {
    await stageKube(h, "legacy", false);
    await stageKube(h, "nft", true);
    // Some pod's portmap wrote to nft before the switch: its shared chain is still there.
    await nsRunOk(h.topo.node, "iptables-nft-restore", ["-w", "--noflush"], {
      input: "*nat\n:CNI-HOSTPORT-DNAT - [0:0]\nCOMMIT\n",
    });
    ({ list, stateDir } = await startPods(h, pods));
  });

  it("keeps each pod where its rules are; rebuilds one whose ADD recorded its variant there; refuses one nothing places, naming both variants", async () => {
    const before = await operator(h, ["reconcile", "--iptables", "auto", ...dirs()]);
    expect(before.code, before.stderr).toBe(0);
    expect(before.stdout).toContain("iptables-legacy IPv4: 2 attachment(s) correct, left alone; 0 rebuilt");
    // Pods as if they had started before this version: no record of their variant. b's emptied chain still
    // places it in legacy.
    for (const p of pods.values()) rmSync(recordPath(stateDir, list.name, p.pod.containerID));
    const chainB = dnChainName(list.name, pods.get("b")!.pod.containerID);
    await nsRunOk(h.topo.node, "iptables-legacy", ["-w", "-t", "nat", "-F", chainB]);
    const held = await operator(h, ["reconcile", "--iptables", "auto", ...dirs()]);
    expect(held.code, held.stderr).toBe(0);
    expect(held.stdout).toMatch(/iptables-legacy IPv4: default\/b \(cbr0, \S+\): rewrote/);
    // Then every jump and b's chain gone: a's chain places a, nothing places b.
    await nsRunOk(h.topo.node, "iptables-legacy", ["-w", "-t", "nat", "-F", "CNI-HOSTPORT-DNAT"]);
    for (const flag of ["-F", "-X"]) await nsRunOk(h.topo.node, "iptables-legacy", ["-w", "-t", "nat", flag, chainB]);
    const refused = await operator(h, ["reconcile", "--iptables", "auto", ...dirs()]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(
      "nothing tells which iptables its portmap runs (no ADD here recorded its iptables, iptables-legacy and iptables-nft both hold portmap's chains, both nat tables exist): left without rules until --iptables legacy or --iptables nft says which",
    );
    expect(portmapLines(await natOf(h, "nft"))).toEqual([":CNI-HOSTPORT-DNAT - [0:0]"]);
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8080)).toBe("pod-a");
    const settled = await operator(h, ["reconcile", "--iptables", "legacy", ...dirs()]);
    expect(settled.code, settled.stderr).toBe(0);
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8081)).toBe("pod-b");
    expect(await whoAnswers(h.topo.client, "tcp", CLUSTER_IP, 8081)).toBe("service");
    expect(portmapLines(await natOf(h, "nft"))).toEqual([":CNI-HOSTPORT-DNAT - [0:0]"]);
  });
});
