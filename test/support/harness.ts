// One-stop setup for e2e tests, the demo and the benchmark: a topology plus a CNI invoker running in its node.

import { join } from "node:path";
import {
  type ChainRun,
  CniInvoker,
  describeRun,
  type InvokerOptions,
  type NetConfList,
  PLUGIN_TYPE,
  type PluginRun,
  type PortMapping,
  type RuntimeConf,
  withoutPlugin,
} from "./cni.js";
import { POD_SUBNET, type PodRuntimeOptions, podRuntime } from "./conflists.js";
import type { RunResult } from "./exec.js";
import {
  chainRules,
  dnChainName,
  type Family,
  type IptablesOptions,
  legacyIptablesPath,
  type MappingRuleSpec,
  natSave,
  portmapRules,
  rulesIn,
  withoutRulesOf,
} from "./iptables.js";
import { nsRun } from "./netns.js";
import { hostportsRuleMask, nftPodRules, nftPortmapRule, nftTables } from "./nftables.js";
import { pluginBinary, pluginPath } from "./paths.js";
import { portmapVariant } from "./portmap-variant.js";
import { createTopology, type Pod, type Topology } from "./topology.js";

export * from "./cni.js";
export * from "./conflists.js";
export * from "./iptables.js";
export { netnsPath } from "./netns.js";
export * from "./nftables.js";
export { pluginBinary, REPO_ROOT } from "./paths.js";
export * from "./portmap-variant.js";
export * from "./shapes.js";
export * from "./topology.js";
export * from "./traffic.js";

export const IS_ROOT = process.getuid?.() === 0;
export const ROOT_SKIP_MESSAGE = "e2e tests need root (network namespaces, iptables): skipped";

export interface Harness {
  topo: Topology;
  cni: CniInvoker;
  /** How to call iptables so as to see what the plugins wrote (same PATH as theirs). */
  iptables: IptablesOptions;
  /** Creates a pod namespace, runs the chain's ADD for it and (optionally) starts its server. */
  startPod(name: string, list: NetConfList, opts?: StartPodOptions): Promise<StartedPod>;
  /**
   * Like startPod(), but runs the chain in two steps: everything before portmap-hostip, a snapshot of both nat
   * tables, then portmap-hostip alone with the previous result — what libcni does, observed in between.
   */
  startPodObserved(name: string, list: NetConfList, opts?: StartPodOptions): Promise<ObservedPod>;
  /** libcni's cache directory the invoker writes results to (with the `libcniCache` option). */
  cacheDir: string | undefined;
  /** Runs the binary as an operator command (`portmap-hostip <args>`) inside the node namespace. */
  operator(args: readonly string[]): Promise<RunResult>;
  destroy(): Promise<void>;
}

export interface NatSnapshot {
  v4: string[];
  v6: string[];
  /** portmap's nftables tables `ip`/`ip6 cni_hostport` (nft list table, without handles). */
  nft?: { v4: string[]; v6: string[] };
}

/** Both nat tables and portmap's nftables tables of the node: what the plugins may have written. */
export async function snapshot(topo: Topology, iptables: IptablesOptions): Promise<NatSnapshot> {
  return {
    v4: await natSave(topo.node, 4, iptables),
    v6: await natSave(topo.node, 6, iptables),
    nft: await nftTables(topo.node),
  };
}

export interface ObservedPod extends StartedPod {
  /** The run of the plugins before ours. */
  base: ChainRun;
  /** Our plugin's ADD run. */
  ours: PluginRun;
  before: NatSnapshot;
  after: NatSnapshot;
}

export interface StartPodOptions extends PodRuntimeOptions {
  /** Ports the pod's server listens on (identity `pod-<name>`). */
  serve?: { tcp?: number[]; udp?: number[] };
  containerID?: string;
}

export interface StartedPod {
  pod: Pod;
  rt: RuntimeConf;
  add: ChainRun;
}

export async function createHarness(
  opts: Omit<InvokerOptions, "nodeNs" | "cacheDir"> & {
    legacyIptables?: boolean /** Write libcni's result cache in the topology's temp dir. */;
    libcniCache?: boolean;
  } = {},
): Promise<Harness> {
  const topo = await createTopology();
  if (opts.legacyIptables) opts = { ...opts, path: legacyIptablesPath(topo.tmpDir) };
  const cacheDir = opts.libcniCache ? join(topo.tmpDir, "cni-cache") : undefined;
  const cni = new CniInvoker({
    workDir: topo.tmpDir,
    ...opts,
    nodeNs: topo.node,
    ...(cacheDir === undefined ? {} : { cacheDir }),
  });
  const iptables: IptablesOptions = opts.path === undefined ? {} : { path: opts.path };
  return {
    topo,
    cni,
    iptables,
    async startPod(name, list, podOpts = {}) {
      const pod = await topo.addPod(name, podOpts.containerID);
      const rt = podRuntime(pod, podOpts);
      const add = await cni.add(list, rt);
      if (add.ok && podOpts.serve) await topo.servePod(pod, podOpts.serve);
      return { pod, rt, add };
    },
    async startPodObserved(name, list, podOpts = {}) {
      const at = list.plugins.findIndex((p) => p.type === PLUGIN_TYPE);
      if (at < 0) throw new Error("the list has no portmap-hostip entry");
      const pod = await topo.addPod(name, podOpts.containerID);
      const rt = podRuntime(pod, podOpts);
      const base = await cni.add(list, rt, { to: at });
      if (!base.ok) throw new Error(`ADD before portmap-hostip failed:\n${describeRun(base)}`);
      const before = await snapshot(topo, iptables);
      const add = await cni.add(list, rt, { from: at, ...(base.result ? { prevResult: base.result } : {}) });
      const after = await snapshot(topo, iptables);
      if (add.ok && podOpts.serve) await topo.servePod(pod, podOpts.serve);
      return { pod, rt, add, base, ours: add.runs[0]!, before, after };
    },
    cacheDir,
    operator(args) {
      return nsRun(topo.node, opts.pluginBinary ?? pluginBinary(), args, {
        env: { PATH: opts.path ?? pluginPath() },
        timeoutMs: 60_000,
      });
    },
    async destroy() {
      cni.dispose();
      await topo.destroy();
    },
  };
}

/** The pod's first IPv4 and IPv6 address (without prefix length) from a CNI result. */
export function podIPs(result: Record<string, unknown> | undefined): { v4?: string; v6?: string } {
  const out: { v4?: string; v6?: string } = {};
  for (const entry of (result?.["ips"] as { address: string }[] | undefined) ?? []) {
    const ip = entry.address.split("/")[0]!;
    if (ip.includes(":")) out.v6 ??= ip;
    else out.v4 ??= ip;
  }
  return out;
}

/**
 * A snapshot without one pod's hostPort rules (what must not change): the rules of its iptables chain
 * `CNI-DN-…` (its declaration stays) and its rules in nftables `hostports` (comment = container ID).
 */
export function outside(s: NatSnapshot, listName: string, containerID: string): NatSnapshot {
  const chain = dnChainName(listName, containerID);
  const others = (table: string[]) => {
    const mine = hostportsRuleMask(table, containerID);
    return table.filter((_, i) => !mine[i]);
  };
  const nft = s.nft && { v4: others(s.nft.v4), v6: others(s.nft.v6) };
  return { ...s, v4: withoutRulesOf(s.v4, chain), v6: withoutRulesOf(s.v6, chain), ...(nft ? { nft } : {}) };
}

/** One pod's hostPort rules in a snapshot, where the matrix's portmap writes them (as podHostportRules()). */
export function podRulesIn(s: NatSnapshot, listName: string, containerID: string, family: Family): string[] {
  if (portmapVariant().backend === "iptables")
    return rulesIn(family === 4 ? s.v4 : s.v6, dnChainName(listName, containerID));
  const table = s.nft?.[family === 4 ? "v4" : "v6"] ?? [];
  const mine = hostportsRuleMask(table, containerID);
  return table.filter((_, i) => mine[i]).map((l) => l.trim());
}

/** Every line of a snapshot that belongs to the pod: its chain, jumps to it, its rules in either backend. */
export function podTraces(s: NatSnapshot, listName: string, containerID: string): string[] {
  const chain = dnChainName(listName, containerID);
  const lines = [...s.v4, ...s.v6, ...(s.nft?.v4 ?? []), ...(s.nft?.v6 ?? [])];
  return lines.filter(
    (l) => l.includes(chain) || l.includes(`id: \\"${containerID}\\"`) || l.includes(`"${containerID}"`),
  );
}

export interface AgainstPortmapAlone {
  /** The full chain in `ours` (observed around our plugin). */
  ours: ObservedPod;
  /** portmap alone in `alone`, the runtime sending the host IPs the policy should arrive at. */
  reference: StartedPod;
  /** The pod's chain name, the same in both nodes. */
  chain: string;
  /** Both nat tables of both nodes after the ADDs. */
  nat: { ours: NatSnapshot; alone: NatSnapshot };
}

/**
 * Runs the same pod (same network name and container ID, hence the same chain name and pod IP) in two
 * nodes: in `ours` through the full list with `pod` options; in `alone` through the list without
 * portmap-hostip, the runtime sending `referenceMappings` (mappings with the hostIPs our policy should pick).
 */
export async function againstPortmapAlone(
  ours: Harness,
  alone: Harness,
  o: {
    list: (dataDir: string) => NetConfList;
    pod: StartPodOptions & { containerID: string };
    referenceMappings: PortMapping[];
  },
): Promise<AgainstPortmapAlone> {
  const list = o.list(ours.topo.ipamDataDir);
  const started = await ours.startPodObserved("a", list, o.pod);
  const reference = await alone.startPod("a", withoutPlugin(o.list(alone.topo.ipamDataDir)), {
    containerID: o.pod.containerID,
    portMappings: o.referenceMappings,
  });
  if (!reference.add.ok) throw new Error(`portmap alone failed:\n${describeRun(reference.add)}`);
  const nat = { ours: await snapshot(ours.topo, ours.iptables), alone: await snapshot(alone.topo, alone.iptables) };
  return { ours: started, reference, chain: dnChainName(list.name, o.pod.containerID), nat };
}

/**
 * The pod's hostPort rules where the matrix's portmap ($PMH_PORTMAP) wrote them: its iptables chain
 * `CNI-DN-…`, or its rules (comment = container ID) in nftables `hostports`; null when that chain is absent.
 */
export function podHostportRules(
  h: Harness,
  listName: string,
  containerID: string,
  family: Family = 4,
): Promise<string[] | null> {
  return portmapVariant().backend === "nftables"
    ? nftPodRules(h.topo.node, family, containerID)
    : chainRules(h.topo.node, dnChainName(listName, containerID), family, h.iptables);
}

/** `portmapRulesFor`'s spec of a pod's IPv4 rules from its ADD result, all but the mapping's ports. */
export function ipv4RuleSpec(listName: string, containerID: string, result: Record<string, unknown> | undefined) {
  return { listName, containerID, family: 4 as const, podSubnet: POD_SUBNET, podIP: podIPs(result).v4! };
}

/**
 * What the matrix's portmap writes (default options) for one mapping, once per host IP (undefined: no
 * hostIP), in its backend's form: portmap's iptables triple, or one nftables `hostports` rule.
 */
export function portmapRulesFor(
  spec: Omit<MappingRuleSpec, "chain" | "hostIP"> & { listName: string; containerID: string },
  hostIPs: ReadonlyArray<string | undefined>,
): string[] {
  if (portmapVariant().backend === "nftables") return hostIPs.map((hostIP) => nftPortmapRule(spec, hostIP));
  const chain = dnChainName(spec.listName, spec.containerID);
  return hostIPs.flatMap((hostIP) => portmapRules({ ...spec, chain, ...(hostIP === undefined ? {} : { hostIP }) }));
}
