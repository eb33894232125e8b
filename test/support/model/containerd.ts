// Pods of the model test started by a real containerd through CRI, as kubelet starts them (test/support/cri):
// it runs the managed network's conflist from the keeper's conf dir, so the keeper's and the network plugin's
// rewrites reach it, and keeps libcni's cache in the run's own directory. What containerd sent the plugin
// (the recorder in its bin dir) says whether a sandbox's ADD and DEL ran with our entry.
import { join } from "node:path";
import { HOST_IP_ANNOTATION } from "../conflists.js";
import { grpcMessage } from "../cri/client.js";
import { Containerd } from "../cri/containerd.js";
import { attachNetns, netnsPath } from "../netns.js";
import { pluginBinary, pluginPath } from "../paths.js";
import type { Pod } from "../topology.js";
import { type ModelNode, modelConflist, type PodRuntime, type Started } from "./node.js";
import { annotationText, CONTAINER_PORT, NETWORKS, type NetworkSpec, type PodAsk } from "./policy.js";

/** The one network containerd runs: the managed one, whose conflist the keeper keeps. */
export const CONTAINERD_NETWORKS = NETWORKS.filter((n) => n.managed);

export class ContainerdRuntime implements PodRuntime {
  private readonly pods = new Map<string, { pod: Pod; id: string }>();

  private constructor(
    private readonly node: ModelNode,
    private readonly ctd: Containerd,
  ) {}

  static async start(node: ModelNode): Promise<ContainerdRuntime> {
    const net = CONTAINERD_NETWORKS[0] as NetworkSpec;
    const ctd = await Containerd.start({
      node: node.ns,
      dir: join(node.topo.tmpDir, "containerd"),
      path: pluginPath(),
      conflist: modelConflist(net, node.dirs),
      plugin: pluginBinary(),
      cgroupParent: `/${node.topo.prefix}`,
      confDir: node.dirs.confDir,
      cacheDir: node.dirs.cache,
    });
    return new ContainerdRuntime(node, ctd);
  }

  /** Whether containerd ran our plugin with this command for the sandbox. */
  private ranOurs(id: string, command: string): boolean {
    return this.ctd.calls().some((c) => c.command === command && c.env["CNI_CONTAINERID"] === id);
  }

  async add(name: string, _net: NetworkSpec, ask: PodAsk): Promise<Started> {
    const before = new Set(this.ctd.calls().map((c) => c.env["CNI_CONTAINERID"]));
    let id: string;
    try {
      id = await this.ctd.cri.runPodSandbox({
        metadata: { name, uid: `00000000-0000-4000-8000-${name.padStart(12, "0")}`, namespace: "default", attempt: 0 },
        hostname: name,
        portMappings: ask.mappings.map((m) => ({
          protocol: m.proto === "tcp" ? "TCP" : "UDP",
          containerPort: m.containerPort,
          hostPort: m.hostPort,
          ...(m.hostIP === "" ? {} : { hostIp: m.hostIP }),
        })),
        annotations: ask.annotation ? { [HOST_IP_ANNOTATION]: annotationText(ask.annotation) } : {},
        labels: { "pmh-run": this.node.topo.prefix },
        linux: { cgroupParent: `/${this.node.topo.prefix}` },
      });
    } catch (err) {
      // containerd has run the DEL of what it set up; the sandbox's ID is the one our plugin was sent.
      const call = this.ctd.calls().find((c) => c.command === "ADD" && !before.has(c.env["CNI_CONTAINERID"]));
      const code = call ? (JSON.parse(call.stdout || "{}") as { code?: number }).code : undefined;
      return {
        ok: false,
        text: grpcMessage(err),
        id: call?.env["CNI_CONTAINERID"] ?? "",
        ips: {},
        withEntry: call !== undefined,
        ...(code === undefined ? {} : { code }),
      };
    }
    const ns = `${this.node.topo.prefix}-pod-${name}`;
    await attachNetns(ns, await this.ctd.sandboxPid(id));
    const pod: Pod = { name, ns, netnsPath: netnsPath(ns), containerID: id };
    this.pods.set(name, { pod, id });
    const protos = new Set(ask.mappings.map((m) => m.proto));
    await this.node.topo.servePod(pod, {
      tcp: protos.has("tcp") ? [CONTAINER_PORT.tcp] : [],
      udp: protos.has("udp") ? [CONTAINER_PORT.udp] : [],
    });
    const network = (await this.ctd.cri.podSandboxStatus(id)).status.network;
    const all = [network?.ip ?? "", ...(network?.additionalIps ?? []).map((a) => a.ip)];
    const v4 = all.find((ip) => ip !== "" && !ip.includes(":"));
    const v6 = all.find((ip) => ip.includes(":"));
    return {
      ok: true,
      text: "",
      id,
      ips: { ...(v4 ? { 4: v4 } : {}), ...(v6 ? { 6: v6 } : {}) },
      withEntry: this.ranOurs(id, "ADD"),
    };
  }

  async del(name: string): Promise<{ withEntry: boolean }> {
    const known = this.pods.get(name);
    if (!known) throw new Error(`no pod ${name}`);
    await this.node.topo.removePod(known.pod);
    await this.ctd.cri.stopPodSandbox(known.id);
    await this.ctd.cri.removePodSandbox(known.id);
    this.pods.delete(name);
    return { withEntry: this.ranOurs(known.id, "DEL") };
  }

  restart(): Promise<void> {
    return this.ctd.restart();
  }

  async destroy(): Promise<void> {
    for (const { pod } of this.pods.values()) await this.node.topo.removePod(pod).catch(() => {});
    await this.ctd.destroy();
  }
}
