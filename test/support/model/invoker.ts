// Pods of the model test started as libcni starts them (test/support/cni.ts): the real chain, each network with
// its own portmap, the managed network's conflist read from disk at each ADD and DEL as a runtime reads it.
import { CniInvoker, describeRun, PLUGIN_TYPE, type RuntimeConf } from "../cni.js";
import { containerdMapping, HOST_IP_ANNOTATION, podRuntime } from "../conflists.js";
import { podIPs } from "../harness.js";
import { legacyIptablesPath } from "../iptables.js";
import type { Pod } from "../topology.js";
import { type ModelNode, modelConflist, type PodRuntime, portmapOf, type Started } from "./node.js";
import { annotationText, CONTAINER_PORT, NETWORKS, type NetworkSpec, type PodAsk } from "./policy.js";

export class InvokerRuntime implements PodRuntime {
  private readonly invokers = new Map<string, CniInvoker>();
  private readonly pods = new Map<string, { pod: Pod; rt: RuntimeConf; net: NetworkSpec }>();

  constructor(private readonly node: ModelNode) {
    for (const net of NETWORKS)
      this.invokers.set(
        net.name,
        new CniInvoker({
          nodeNs: node.ns,
          workDir: node.topo.tmpDir,
          cacheDir: node.dirs.cache,
          portmapBinary: portmapOf(net),
          // The mixed node: this network's plugins run iptables-legacy.
          ...(net.table === "iptables-legacy" ? { path: legacyIptablesPath(node.topo.tmpDir) } : {}),
        }),
      );
  }

  /** The conflist a runtime would use now: the managed one as it is on disk. */
  private list(net: NetworkSpec) {
    return net.managed ? this.node.readManagedConflist() : modelConflist(net, this.node.dirs);
  }

  private invoker(net: NetworkSpec): CniInvoker {
    return this.invokers.get(net.name) as CniInvoker;
  }

  async add(name: string, net: NetworkSpec, ask: PodAsk): Promise<Started> {
    const topo = this.node.topo;
    const pod = await topo.addPod(name);
    const annotations: Record<string, string> = ask.annotation
      ? { [HOST_IP_ANNOTATION]: annotationText(ask.annotation) }
      : {};
    const rt = podRuntime(pod, {
      portMappings: ask.mappings.map((m) => containerdMapping(m.hostPort, m.containerPort, m.proto, m.hostIP)),
      annotations,
    });
    const list = this.list(net);
    const withEntry = list.plugins.some((p) => p.type === PLUGIN_TYPE);
    const run = await this.invoker(net).add(list, rt);
    const base = { id: pod.containerID, withEntry, text: describeRun(run) };
    if (!run.ok) {
      // As a runtime does after a failed ADD.
      await this.invoker(net).del(list, rt);
      await topo.removePod(pod);
      const code = run.failed?.output?.["code"];
      return { ...base, ok: false, ips: {}, ...(typeof code === "number" ? { code } : {}) };
    }
    this.pods.set(name, { pod, rt, net });
    const protos = new Set(ask.mappings.map((m) => m.proto));
    await topo.servePod(pod, {
      tcp: protos.has("tcp") ? [CONTAINER_PORT.tcp] : [],
      udp: protos.has("udp") ? [CONTAINER_PORT.udp] : [],
    });
    const ips = podIPs(run.result);
    return { ...base, ok: true, ips: { ...(ips.v4 ? { 4: ips.v4 } : {}), ...(ips.v6 ? { 6: ips.v6 } : {}) } };
  }

  async del(name: string): Promise<{ withEntry: boolean }> {
    const known = this.pods.get(name);
    if (!known) throw new Error(`no pod ${name}`);
    const list = this.list(known.net);
    const run = await this.invoker(known.net).del(list, known.rt);
    if (!run.ok) throw new Error(`DEL of ${name} failed:\n${describeRun(run)}`);
    await this.node.topo.removePod(known.pod);
    this.pods.delete(name);
    return { withEntry: list.plugins.some((p) => p.type === PLUGIN_TYPE) };
  }

  /** Our plugin's CHECK alone (portmap's own CHECK fails on scoped rules), with the cached result. */
  async check(name: string) {
    const known = this.pods.get(name);
    if (!known) throw new Error(`no pod ${name}`);
    const list = modelConflist(known.net, this.node.dirs);
    const inv = this.invoker(known.net);
    const ours = list.plugins.find((p) => p.type === PLUGIN_TYPE);
    if (!ours) throw new Error(`${list.name} has no entry of ours`);
    const r = await inv.invoke("CHECK", list, ours, known.rt, inv.cachedResult(list, known.rt));
    return { code: r.code, stdout: r.stdout, stderr: r.stderr };
  }

  async destroy(): Promise<void> {
    for (const inv of this.invokers.values()) inv.dispose();
  }
}
