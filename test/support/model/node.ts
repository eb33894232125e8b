// The model test's real node: the e2e topology with a second ClusterIP and a Service on each, kube-proxy-like
// rules of its own (iptables-nft nat and filter, iptables-legacy nat, an nftables table), one network per
// NETWORKS entry (the real bridge + host-local → portmap → portmap-hostip chain, each network with its
// portmap), the keeper (`install --watch --cache-dir`) that can be killed and started again, and what the
// steps do to the node: flushes, saved tables restored, reconcile, gc, the conflist rewritten, addresses.
// Pods are started by a runtime (PodRuntime): the libcni-like invoker here, or containerd (cri/).
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pluginEntry } from "../../../src/install/conflist.js";
import { type NetConfList, PLUGIN_TYPE, withoutPlugin } from "../cni.js";
import type { RunResult } from "../exec.js";
import { type RunningKeeper, startKeeper } from "../keeper.js";
import { ipIn, nsRun, nsRunOk, stopChild } from "../netns.js";
import { pluginBinary, pluginPath, SYSTEM_CNI_DIR } from "../paths.js";
import { portmapV191 } from "../portmap-variant.js";
import { createTopology, IPVS_DEVICE, type Topology, UPLINK } from "../topology.js";
import { FOREIGN_NFT_TABLE, type NodeRead, type PodRef, readNode } from "./observe.js";
import {
  CLUSTER_IP2,
  FAMILIES,
  type Family,
  NETWORKS,
  type NetworkSpec,
  OPTIONAL_ADDRESS,
  type PodAddresses,
  type PodAsk,
  type RuleTable,
  SERVICES,
  type Variant,
} from "./policy.js";

/** The keeper's full resync period in the model: short, so that passes interleave with the steps. */
export const RESYNC_SECONDS = 2;

/**
 * The iptables the node's CNI plugins run, as the operator states it on a mixed node: every network's but
 * legnet's, whose pods always record legacy (our entry is always in its list). A pod started without our entry
 * records nothing, and with legnet's records beside the others' nothing else would place it after a flush.
 */
const CNI_IPTABLES = ["--iptables", "nft"];

/** What a runtime reports of a pod's start. */
export interface Started {
  ok: boolean;
  /** The plugin's CNI error code when the start failed. */
  code?: number;
  text: string;
  id: string;
  ips: PodAddresses;
  /** Whether the conflist it ran had our entry. */
  withEntry: boolean;
}

/** Starts and stops pods on the node: a libcni-like invoker or a container runtime. */
export interface PodRuntime {
  /** A pod named `name` on `net`; on failure everything of it is gone again (the runtime's DEL). */
  add(name: string, net: NetworkSpec, ask: PodAsk): Promise<Started>;
  del(name: string): Promise<{ withEntry: boolean }>;
  /** Our CHECK of the pod (undefined: the runtime never sends CHECK). */
  check?(name: string): Promise<Pick<RunResult, "code" | "stdout" | "stderr">>;
  /** The runtime restarted while its pods run (undefined: not a daemon). */
  restart?(): Promise<void>;
  destroy(): Promise<void>;
}

/** The node's directories of this run. */
export interface NodeDirs {
  state: string;
  cache: string;
  confDir: string;
  /** The keeper's CNI bin dir: our binary (its installer copies it) and the portmap it runs again for nftables pods. */
  binDir: string;
  ipam: string;
}

/** The conflist of a model network, with our entry (as the keeper's installer writes it for the managed one). */
export function modelConflist(net: NetworkSpec, dirs: NodeDirs, cniVersion = "1.0.0"): NetConfList {
  const ranges = [[{ subnet: net.subnet4 }], ...(net.subnet6 ? [[{ subnet: net.subnet6 }]] : [])];
  const defaultHostIP = net.defaultHostIP === "node" ? {} : { defaultHostIP: net.defaultHostIP };
  return {
    name: net.name,
    cniVersion,
    plugins: [
      {
        type: "bridge",
        bridge: net.bridge,
        isGateway: true,
        isDefaultGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: { type: "host-local", ranges, dataDir: dirs.ipam },
      },
      {
        type: "portmap",
        capabilities: { portMappings: true },
        ...(net.table === "nftables" ? { backend: "nftables" } : {}),
      },
      pluginEntry({ stateDir: dirs.state, ...defaultHostIP }) as NetConfList["plugins"][number],
    ],
  };
}

/** The binary a network's `portmap` type runs. */
/** The portmap binary a network runs; throws, naming it, when it is absent (../shared/bin beside the clone). */
export function portmapOf(net: NetworkSpec): string {
  const binary = net.portmap === "debian" ? join(SYSTEM_CNI_DIR, "portmap") : portmapV191();
  if (!existsSync(binary)) throw new Error(`network ${net.name}: ${binary} does not exist, the model cannot run`);
  return binary;
}

// kube-proxy's own rules (and a firewall's), which nothing of portmap's or ours may change.
const FOREIGN_NAT = {
  4: [
    "*nat",
    ":KUBE-SERVICES - [0:0]",
    ":KUBE-POSTROUTING - [0:0]",
    ":KUBE-SVC-PMHMODEL - [0:0]",
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    "-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE",
    "-A KUBE-SERVICES -d 10.96.0.60/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-PMHMODEL",
    "-A KUBE-SVC-PMHMODEL -p tcp -j DNAT --to-destination 10.244.250.1:80",
    "COMMIT",
  ],
  6: [
    "*nat",
    ":KUBE-SERVICES - [0:0]",
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    "-A KUBE-SERVICES -d fd00:96::60/128 -p tcp -m tcp --dport 80 -j DNAT --to-destination [fd00:244::1]:80",
    "COMMIT",
  ],
};
const FOREIGN_FILTER = [
  "*filter",
  ":KUBE-FIREWALL - [0:0]",
  "-A INPUT -j KUBE-FIREWALL",
  // Stateful, as kube-proxy or firewalld make a node: conntrack keeps tracking while the nat rules are gone.
  "-A INPUT -m conntrack --ctstate INVALID -j DROP",
  '-A KUBE-FIREWALL -s 203.0.113.0/24 -m comment --comment "pmh model: foreign" -j DROP',
  "COMMIT",
];
// kubelet's hint (it runs iptables-nft; the mixed node's CNI plugins run legacy): evidence of nothing of ours.
const KUBELET_HINT = ["*mangle", ":KUBE-IPTABLES-HINT - [0:0]", "COMMIT"];
// What a firewall keeps in legacy's nat tables: a rule of its own in IPv4, nothing in IPv6.
const FOREIGN_LEGACY_NAT = {
  4: [
    "*nat",
    ":KUBE-LEGACY - [0:0]",
    "-A PREROUTING -d 10.96.0.61/32 -j KUBE-LEGACY",
    "-A KUBE-LEGACY -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.244.250.2:80",
    "COMMIT",
  ],
  6: ["*nat", "COMMIT"],
};
const FOREIGN_NFT = [
  `table ${FOREIGN_NFT_TABLE.join(" ")} {`,
  "  chain input {",
  "    type filter hook input priority 10; policy accept;",
  "    ip saddr 203.0.113.0/24 drop",
  "  }",
  "}",
];

const restoreInput = (lines: readonly string[]) => `${lines.join("\n")}\n`;

/** The saved tables of a "save" step: both iptables variants' nat tables, portmap's nftables tables. */
export interface SavedTables {
  nat: Record<Variant, Record<Family, string>>;
  nft: Record<Family, string>;
  read: NodeRead;
}

export class ModelNode {
  keeper: RunningKeeper | undefined;
  private constructor(
    readonly topo: Topology,
    readonly dirs: NodeDirs,
  ) {}

  /** The topology with the model's Services, foreign rules and directories. */
  static async create(): Promise<ModelNode> {
    const topo = await createTopology();
    try {
      const dirs: NodeDirs = {
        state: join(topo.tmpDir, "state"),
        cache: join(topo.tmpDir, "cni-cache"),
        confDir: join(topo.tmpDir, "net.d"),
        binDir: join(topo.tmpDir, "bin"),
        ipam: topo.ipamDataDir,
      };
      for (const d of [dirs.state, join(dirs.cache, "results"), dirs.confDir, dirs.binDir])
        mkdirSync(d, { recursive: true });
      symlinkSync(portmapV191(), join(dirs.binDir, "portmap"));
      await ipIn(topo.node, "addr", "add", `${CLUSTER_IP2}/32`, "dev", IPVS_DEVICE);
      for (const s of SERVICES) await topo.serve(topo.node, s.identity, { tcp: [...s.tcp], udp: [...s.udp] }, s.ip);
      const node = new ModelNode(topo, dirs);
      await node.kubeProxyRules();
      await nsRunOk(topo.node, "iptables-restore", ["-w", "--noflush"], { input: restoreInput(FOREIGN_FILTER) });
      await nsRunOk(topo.node, "iptables-restore", ["-w", "--noflush"], { input: restoreInput(KUBELET_HINT) });
      await nsRunOk(topo.node, "iptables-legacy-restore", ["-w", "--noflush"], {
        input: restoreInput(FOREIGN_LEGACY_NAT[4]),
      });
      await nsRunOk(topo.node, "nft", ["-f", "-"], { input: restoreInput(FOREIGN_NFT) });
      const managed = NETWORKS.find((n) => n.managed);
      if (managed) writeFileSync(node.confFile, JSON.stringify(modelConflist(managed, dirs), null, 2));
      await topo.settleIPv6();
      return node;
    } catch (e) {
      await topo.destroy().catch(() => {});
      throw e;
    }
  }

  get ns(): string {
    return this.topo.node;
  }

  /** The managed network's conflist, in the keeper's conf dir. */
  get confFile(): string {
    return join(this.dirs.confDir, "10-cbr0.conflist");
  }

  /** The managed conflist as a runtime reads it now. */
  readManagedConflist(): NetConfList {
    return JSON.parse(readFileSync(this.confFile, "utf8")) as NetConfList;
  }

  /** kube-proxy's own chains and rules, written beside whatever the nat tables hold (`replace`: in place of it). */
  async kubeProxyRules(replace = false): Promise<void> {
    const flags = replace ? ["-w"] : ["-w", "--noflush"];
    await nsRunOk(this.ns, "iptables-restore", flags, { input: restoreInput(FOREIGN_NAT[4]) });
    await nsRunOk(this.ns, "ip6tables-restore", flags, { input: restoreInput(FOREIGN_NAT[6]) });
  }

  read(pods: readonly PodRef[]): Promise<NodeRead> {
    return readNode(this.ns, pods);
  }

  /** The network plugin rewrote the conflist (flannel at its restart): our entry is gone. */
  rewriteConflist(): void {
    const managed = NETWORKS.find((n) => n.managed) as NetworkSpec;
    writeFileSync(this.confFile, JSON.stringify(withoutPlugin(modelConflist(managed, this.dirs)), null, 2));
  }

  hasEntryOnDisk(): boolean {
    return this.readManagedConflist().plugins.some((p) => p.type === PLUGIN_TYPE);
  }

  /**
   * A firewall reload of one variant's nat tables: each replaced, in one transaction per family, by what the
   * firewall keeps there (kube-proxy's rules in iptables-nft's); every chain of portmap's and ours is gone. A
   * table that does not exist (legacy's, until something writes it) is left so.
   */
  async flushNat(variant: Variant): Promise<void> {
    if (variant === "nft") return this.kubeProxyRules(true);
    for (const f of FAMILIES)
      if (await this.legacyNatExists(f))
        await nsRunOk(this.ns, `${f === 4 ? "iptables" : "ip6tables"}-legacy-restore`, ["-w"], {
          input: restoreInput(FOREIGN_LEGACY_NAT[f]),
        });
  }

  /** Whether iptables-legacy's nat table of a family exists in the node (the kernel lists the loaded ones). */
  private async legacyNatExists(family: Family): Promise<boolean> {
    const names = await nsRunOk(this.ns, "cat", [`/proc/net/ip${family === 4 ? "" : "6"}_tables_names`]);
    return names.split("\n").includes("nat");
  }

  /** `nft delete table` or `nft flush chain … hostports` of portmap's nftables table of one family. */
  async flushNft(family: Family, how: "table" | "chain"): Promise<void> {
    const table = [family === 4 ? "ip" : "ip6", "cni_hostport"];
    const args = how === "table" ? ["delete", "table", ...table] : ["flush", "chain", ...table, "hostports"];
    const r = await nsRun(this.ns, "nft", args, { timeoutMs: 15_000 });
    if (r.code !== 0 && !/No such file or directory/.test(r.stderr))
      throw new Error(`nft ${args.join(" ")}: ${r.stderr.trim()}`);
  }

  /** The tables an old-table restore puts back, read once (with what each pod had in them then). */
  async save(pods: readonly PodRef[]): Promise<SavedTables> {
    const read = await this.read(pods);
    const natOf = (lines: readonly string[]) => {
      const start = lines.indexOf("*nat");
      return start < 0 ? "" : restoreInput(lines.slice(start, lines.indexOf("COMMIT", start) + 1));
    };
    const d = read.dumps;
    const variantNat = (table: RuleTable) => ({
      4: natOf(d[`${table} IPv4`] ?? []),
      6: natOf(d[`${table} IPv6`] ?? []),
    });
    return {
      nat: { nft: variantNat("iptables-nft"), legacy: variantNat("iptables-legacy") },
      nft: { 4: restoreInput(d["nftables IPv4"] ?? []), 6: restoreInput(d["nftables IPv6"] ?? []) },
      read,
    };
  }

  /** iptables-restore of one variant's saved nat tables (the whole table, as a firewall restores its saved rules). */
  async restoreNat(saved: SavedTables, variant: Variant): Promise<void> {
    for (const f of FAMILIES)
      if (saved.nat[variant][f] !== "")
        await nsRunOk(this.ns, `${f === 4 ? "iptables" : "ip6tables"}-${variant}-restore`, ["-w"], {
          input: saved.nat[variant][f],
        });
  }

  /** A saved portmap nftables table put back in place of the current one, in one nft transaction. */
  async restoreNft(saved: SavedTables, family: Family): Promise<void> {
    const table = `${family === 4 ? "ip" : "ip6"} cni_hostport`;
    const text = saved.nft[family].trim() === "" ? "" : saved.nft[family];
    await nsRunOk(this.ns, "nft", ["-f", "-"], { input: `table ${table}\ndelete table ${table}\n${text}` });
  }

  /** A node address of `family` added or removed (on the uplink, where the default route is). */
  async toggleAddress(family: Family, present: boolean): Promise<void> {
    const ip = OPTIONAL_ADDRESS[family];
    const cidr = family === 4 ? `${ip}/24` : `${ip}/64`;
    const args = family === 4 ? ["addr"] : ["-6", "addr"];
    await ipIn(
      this.ns,
      ...args,
      present ? "add" : "del",
      cidr,
      "dev",
      UPLINK,
      ...(present && family === 6 ? ["nodad"] : []),
    );
  }

  /** An operator command (`portmap-hostip reconcile …`) in the node. */
  operator(args: readonly string[]): Promise<RunResult> {
    return nsRun(this.ns, pluginBinary(), args, { env: { PATH: pluginPath() }, timeoutMs: 120_000 });
  }

  reconcile(): Promise<RunResult> {
    const d = this.dirs;
    return this.operator([
      ...["reconcile", "--cache-dir", d.cache, "--state-dir", d.state],
      ...["--cni-conf-dir", d.confDir, "--cni-bin-dir", d.binDir, ...CNI_IPTABLES],
    ]);
  }

  gc(grace: number): Promise<RunResult> {
    const d = this.dirs;
    return this.operator(["gc", "--cache-dir", d.cache, "--state-dir", d.state, "--grace", String(grace)]);
  }

  async startKeeper(): Promise<void> {
    const d = this.dirs;
    this.keeper = await startKeeper(
      this.ns,
      { binDir: d.binDir, confDir: d.confDir, cacheDir: d.cache, stateDir: d.state },
      RESYNC_SECONDS,
      pluginPath(),
      CNI_IPTABLES,
    );
  }

  /** SIGKILL, whatever it is doing (a pass half done, the keeper lock held). */
  async killKeeper(): Promise<void> {
    if (this.keeper) await stopChild(this.keeper.child);
    this.keeper = undefined;
  }

  async destroy(): Promise<void> {
    await this.killKeeper();
    await this.topo.destroy();
  }
}
