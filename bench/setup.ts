// One iptables variant's bench node: the e2e topology and invoker (test/support), the runner inside the node
// namespace, the timed pod (bridge + host-local ran once), and the CNI calls the bench times.
import { existsSync, rmSync } from "node:fs";
import { delimiter, join } from "node:path";
import { recordPath } from "../src/host/record.js";
import { stateDirFor } from "../test/support/conflists.js";
import {
  bridgeConflist,
  containerdMapping,
  createHarness,
  describeRun,
  dnChainName,
  type Harness,
  type MappingRuleSpec,
  type NetConfList,
  NODE_IP1,
  NODE_IP2,
  NODE_IP6,
  POD_SUBNET,
  POD_SUBNET6,
  type PortMapping,
  podIPs,
  podRuntime,
  portmapRules,
  type RuntimeConf,
  scopedRules,
} from "../test/support/harness.js";
import { SYSTEM_CNI_DIR } from "../test/support/paths.js";
import { Runner } from "./client.js";
import type { Job, JobResult } from "./protocol.js";

export type Variant = "nft" | "legacy";

/** The timed pod's mappings: two, no hostIP (so the default policy "node" applies). */
export const POD_MAPPINGS: PortMapping[] = [containerdMapping(8080, 80, "tcp"), containerdMapping(5353, 53, "udp")];
/** What defaultHostIP "node" resolves to in this topology (see test/e2e/node-default.test.ts), per family. */
export const NODE_HOST_IPS = { 4: [NODE_IP1, NODE_IP2, "127.0.0.1"], 6: [NODE_IP6] } as const;

export type Family = 4 | 6;

/** A pod as the bench drives it: its runtime arguments, its chain, and what plugins before ours returned. */
export interface BenchPod {
  rt: RuntimeConf;
  /** The same pod as the runtime describes it when it has no hostPort (no portMappings capability). */
  rtNoPorts: RuntimeConf;
  /** Its conflist: single-stack, or dual-stack (host-local hands out an IPv6 address too). */
  list: NetConfList;
  chain: string;
  mappings: PortMapping[];
  /** bridge's ADD result: portmap's prevResult. */
  bridgeResult: Record<string, unknown>;
  podIP: string;
  /** Dual-stack pods only. */
  podIP6?: string;
}

/**
 * Removes our record of a container (untimed): its next ADD is then as on a pod's start, the container's first
 * (which swaps portmap's rules without reading them).
 */
export function forgetRecord(h: Harness, network: string, containerID: string): void {
  rmSync(recordPath(stateDirFor(h.topo.ipamDataDir), network, containerID), { force: true });
}

export function which(name: string, path: string): string {
  for (const dir of path.split(delimiter)) {
    const candidate = join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  throw new Error(`${name} not found on PATH ${path}`);
}

function mappingSpec(pod: BenchPod, m: PortMapping, family: Family): MappingRuleSpec {
  return {
    chain: pod.chain,
    family,
    podSubnet: family === 4 ? POD_SUBNET : POD_SUBNET6,
    podIP: family === 4 ? pod.podIP : pod.podIP6!,
    hostPort: Number(m["HostPort"]),
    containerPort: Number(m["ContainerPort"]),
    protocol: m["Protocol"] as "tcp" | "udp",
  };
}

/** portmap's rules for a pod, as `iptables -S` / `ip6tables -S` prints them. */
export function portmapChain(pod: BenchPod, family: Family = 4): string[] {
  return pod.mappings.flatMap((m) => portmapRules(mappingSpec(pod, m, family)));
}

/** The pod's chain after our ADD with defaultHostIP "node": portmap's triples, once per node address. */
export function scopedChain(pod: BenchPod, family: Family = 4): string[] {
  return pod.mappings.flatMap((m) => scopedRules(mappingSpec(pod, m, family), NODE_HOST_IPS[family]));
}

export const sameRules = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && [...a].sort().join("\n") === [...b].sort().join("\n");

/** iptables-restore --noflush input that empties and refills the given chains (nothing else is touched). */
export function chainsPayload(chains: ReadonlyMap<string, readonly string[]>, extra: readonly string[] = []): string {
  return [
    "*nat",
    ...[...chains.keys()].map((c) => `:${c} - [0:0]`),
    ...[...chains.values()].flat(),
    ...extra,
    "COMMIT",
    "",
  ].join("\n");
}

export class BenchNode {
  readonly list: NetConfList;
  /** The same network, dual-stack (the same name, bridge and host-local store). */
  readonly list6: NetConfList;
  readonly path: string;
  private podCount = 0;

  private constructor(
    readonly variant: Variant,
    readonly h: Harness,
    readonly runner: Runner,
  ) {
    this.list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
    this.list6 = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
    this.path =
      h.iptables.path ?? process.env["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  }

  static async create(variant: Variant, runnerScript: string): Promise<BenchNode> {
    const h = await createHarness({ legacyIptables: variant === "legacy" });
    try {
      const runner = await Runner.start(h.topo.node, runnerScript, h.topo.tmpDir);
      return new BenchNode(variant, h, runner);
    } catch (e) {
      await h.destroy();
      throw e;
    }
  }

  async destroy(): Promise<void> {
    await this.runner.stop().catch(() => {});
    await this.h.destroy();
  }

  /** A real pod: its namespace, then bridge (+ host-local) ADD, as the chain's first plugin. */
  async addPod(mappings: PortMapping[] = POD_MAPPINGS, dualStack = false): Promise<BenchPod> {
    const pod = await this.h.topo.addPod(`p${this.podCount++}`);
    const rt = podRuntime(pod, { portMappings: mappings });
    const list = dualStack ? this.list6 : this.list;
    const bridge = await this.h.cni.add(list, rt, { to: 1 });
    if (!bridge.ok || bridge.result === undefined) throw new Error(`bridge ADD failed:\n${describeRun(bridge)}`);
    const ips = podIPs(bridge.result);
    if (dualStack && ips.v6 === undefined) throw new Error("the dual-stack pod got no IPv6 address");
    return {
      rt,
      rtNoPorts: podRuntime(pod),
      list,
      chain: dnChainName(list.name, pod.containerID),
      mappings,
      bridgeResult: bridge.result,
      podIP: ips.v4!,
      ...(ips.v6 === undefined ? {} : { podIP6: ips.v6 }),
    };
  }

  /**
   * A pod without its own namespace or bridge ADD (the "other" pods): another container ID, a pod IP that
   * host-local does not hand out here, the sandbox path of `like`. portmap uses only the IPs and the IDs.
   */
  fakePod(like: BenchPod, containerID: string, podIP: string, mappings: PortMapping[]): BenchPod {
    const bridgeResult = {
      ...like.bridgeResult,
      ips: (like.bridgeResult["ips"] as Record<string, unknown>[]).map((ip) => ({ ...ip, address: `${podIP}/24` })),
    };
    const fake = { name: containerID, ns: "", netnsPath: like.rt.netns, containerID };
    const rt = podRuntime(fake, { portMappings: mappings });
    return {
      rt,
      rtNoPorts: podRuntime(fake),
      list: this.list,
      chain: dnChainName(this.list.name, containerID),
      mappings,
      bridgeResult,
      podIP,
    };
  }

  /** A job with just PATH (the variant's iptables first). */
  tool(file: string, args: string[], input?: string): Job {
    return { file, args, env: { PATH: this.path }, ...(input === undefined ? {} : { input }) };
  }

  /** A CNI plugin call as libcni makes it: its conflist entry's stdin and the CNI_* environment. */
  cniJob(
    command: "ADD" | "DEL" | "VERSION",
    file: string,
    pluginIndex: number,
    pod: BenchPod,
    prevResult?: Record<string, unknown>,
    rt = pod.rt,
  ): Job {
    const env: Record<string, string> = { PATH: this.path, CNI_COMMAND: command };
    if (command === "VERSION") return { file, args: [], env };
    Object.assign(env, {
      CNI_CONTAINERID: rt.containerID,
      CNI_NETNS: rt.netns,
      CNI_IFNAME: rt.ifName ?? "eth0",
      CNI_ARGS: rt.args ?? "",
      CNI_PATH: this.h.cni.cniPath.join(delimiter),
    });
    const stdin = this.h.cni.pluginStdin(pod.list, pod.list.plugins[pluginIndex]!, rt, prevResult);
    return { file, args: [], env, input: JSON.stringify(stdin) };
  }

  portmapAdd(pod: BenchPod): Job {
    return this.cniJob("ADD", join(SYSTEM_CNI_DIR, "portmap"), 1, pod, pod.bridgeResult);
  }

  portmapDel(pod: BenchPod): Job {
    return this.cniJob("DEL", join(SYSTEM_CNI_DIR, "portmap"), 1, pod);
  }

  /** forgetRecord of each pod. */
  forget(pods: readonly BenchPod[]): void {
    for (const pod of pods) forgetRecord(this.h, pod.list.name, pod.rt.containerID);
  }

  /** Our ADD, with what portmap's ADD returned as prevResult. */
  oursAdd(binary: string, pod: BenchPod, portmapResult: Record<string, unknown>): Job {
    return this.cniJob("ADD", binary, 2, pod, portmapResult);
  }

  /** Our ADD for the same pod without hostPorts (portmap passes the result on unchanged). */
  oursAddNoPorts(binary: string, pod: BenchPod): Job {
    return this.cniJob("ADD", binary, 2, pod, pod.bridgeResult, pod.rtNoPorts);
  }

  /** `iptables -S <chain>` as rules (-A lines), timed: the read our ADD makes, with its arguments. */
  async listChain(chain: string, family: Family = 4): Promise<{ rules: string[]; result: JobResult }> {
    const result = await this.runner.runOk(
      this.tool(family === 4 ? "iptables" : "ip6tables", ["-w", "5", "-t", "nat", "-S", chain]),
    );
    return { rules: result.stdout.split("\n").filter((l) => l.startsWith("-A ")), result };
  }

  /** iptables-restore --noflush (the write our ADD makes, with its arguments). */
  async restore(payload: string, family: Family = 4): Promise<JobResult> {
    return this.runner.runOk(
      this.tool(family === 4 ? "iptables-restore" : "ip6tables-restore", ["-w", "5", "--noflush"], payload),
    );
  }

  /** The whole nat table (iptables-save, comment lines dropped). */
  async natSave(): Promise<string[]> {
    const r = await this.runner.runOk(this.tool("iptables-save", ["-t", "nat"]));
    return r.stdout.split("\n").filter((l) => l !== "" && !l.startsWith("#"));
  }
}

/** Runs a CNI job and parses its JSON result; throws with its output unless it exits 0. */
export async function cniOk(
  runner: Runner,
  job: Job,
  what: string,
): Promise<{ result: JobResult; output: Record<string, unknown> }> {
  const result = await runner.run(job);
  if (result.code !== 0)
    throw new Error(`${what} exited ${result.code}\nstdout: ${result.stdout.trim()}\nstderr: ${result.stderr.trim()}`);
  return { result, output: result.stdout.trim() === "" ? {} : (JSON.parse(result.stdout) as Record<string, unknown>) };
}
