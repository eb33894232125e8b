// One-stop setup for e2e tests, the demo and the benchmark: a topology plus a CNI invoker running in its node.
import { CniInvoker, type ChainRun, type InvokerOptions, type NetConfList, type RuntimeConf } from "./cni.js";
import { podRuntime, type PodRuntimeOptions } from "./conflists.js";
import { createTopology, type Pod, type Topology } from "./topology.js";

export * from "./cni.js";
export * from "./conflists.js";
export * from "./iptables.js";
export * from "./topology.js";
export * from "./traffic.js";
export { netnsPath } from "./netns.js";
export { pluginBinary, REPO_ROOT } from "./paths.js";

export const IS_ROOT = process.getuid?.() === 0;
export const ROOT_SKIP_MESSAGE = "e2e tests need root (network namespaces, iptables): skipped";

export interface Harness {
  topo: Topology;
  cni: CniInvoker;
  /** Creates a pod namespace, runs the chain's ADD for it and (optionally) starts its server. */
  startPod(name: string, list: NetConfList, opts?: StartPodOptions): Promise<StartedPod>;
  destroy(): Promise<void>;
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

export async function createHarness(opts: Omit<InvokerOptions, "nodeNs"> = {}): Promise<Harness> {
  const topo = await createTopology();
  const cni = new CniInvoker({ ...opts, nodeNs: topo.node });
  return {
    topo,
    cni,
    async startPod(name, list, podOpts = {}) {
      const pod = await topo.addPod(name, podOpts.containerID);
      const rt = podRuntime(pod, podOpts);
      const add = await cni.add(list, rt);
      if (add.ok && podOpts.serve) await topo.servePod(pod, podOpts.serve);
      return { pod, rt, add };
    },
    async destroy() {
      cni.dispose();
      await topo.destroy();
    },
  };
}
