// Conflists and runtime arguments as Kubernetes runtimes build them.
import { dirname, join } from "node:path";
import type { NetConfList, PluginConf, PortMapping, RuntimeConf } from "./cni.js";
import { PLUGIN_TYPE } from "./cni.js";
import { portmapVariant } from "./portmap-variant.js";
import type { Pod } from "./topology.js";

export const POD_SUBNET = "10.244.1.0/24";
export const POD_SUBNET6 = "2001:db8:244:1::/64";
export const ANNOTATIONS_CAP = "io.kubernetes.cri.pod-annotations";
export const HOST_IP_ANNOTATION = "portmap-hostip/host-ip";

export interface ConflistOptions {
  /** host-local dataDir (always a temporary directory in tests). */
  dataDir: string;
  name?: string;
  cniVersion?: string;
  /** Give pods an IPv6 address too. */
  dualStack?: boolean;
  /** Options of portmap's entry (snat, masqAll, markMasqBit, …). */
  portmap?: Partial<PluginConf>;
  /** Our entry's options (merged over type + capabilities); false = no portmap-hostip entry. */
  hostip?: Partial<PluginConf> | false;
  /**
   * Our entry's stateDir (the records of ADD and DEL); default: "state" beside dataDir, in the test's own
   * temporary directory; false: none (the plugin's default, /run/portmap-hostip).
   */
  stateDir?: string | false;
}

/** Where bridgeConflist's entry has the plugin keep its records, by default. */
export const stateDirFor = (dataDir: string): string => join(dirname(dataDir), "state");

/** bridge (+host-local) → portmap → portmap-hostip, like conflist/10-bridge.conflist. */
export function bridgeConflist(opts: ConflistOptions): NetConfList {
  const ranges = [[{ subnet: POD_SUBNET }]];
  if (opts.dualStack) ranges.push([{ subnet: POD_SUBNET6 }]);
  const plugins: PluginConf[] = [
    {
      type: "bridge",
      bridge: "cni0",
      isGateway: true,
      isDefaultGateway: true,
      ipMasq: false,
      hairpinMode: true,
      ipam: { type: "host-local", ranges, dataDir: opts.dataDir },
    },
    { type: "portmap", capabilities: { portMappings: true }, ...portmapVariant().conf, ...(opts.portmap ?? {}) },
  ];
  if (opts.hostip !== false) {
    const stateDir = opts.stateDir ?? stateDirFor(opts.dataDir);
    plugins.push({
      type: PLUGIN_TYPE,
      capabilities: { portMappings: true, [ANNOTATIONS_CAP]: true },
      ...(stateDir === false ? {} : { stateDir }),
      ...(opts.hostip ?? {}),
    });
  }
  return { name: opts.name ?? "cbr0", cniVersion: opts.cniVersion ?? "1.0.0", plugins };
}

/** A second network on the same node (`name`): its own bridge cni1 and pod subnet 10.244.2.0/24. */
export function secondNetwork(opts: ConflistOptions & { name: string }): NetConfList {
  const list = bridgeConflist(opts);
  const [bridge, ...rest] = list.plugins;
  const ipam = { ...(bridge?.["ipam"] as object), ranges: [[{ subnet: "10.244.2.0/24" }]] };
  return { ...list, plugins: [{ ...bridge, type: "bridge", bridge: "cni1", ipam }, ...rest] };
}

/** A mapping as containerd sends it (Go struct without JSON tags). */
export function containerdMapping(hostPort: number, containerPort: number, protocol = "tcp", hostIP = ""): PortMapping {
  return { HostPort: hostPort, ContainerPort: containerPort, Protocol: protocol, HostIP: hostIP };
}

/** A mapping with the spec's lowercase keys (CRI-O/ocicni); hostIP omitted when undefined. */
export function specMapping(hostPort: number, containerPort: number, protocol = "tcp", hostIP?: string): PortMapping {
  return { hostPort, containerPort, protocol, ...(hostIP === undefined ? {} : { hostIP }) };
}

export interface PodRuntimeOptions {
  portMappings?: PortMapping[];
  /** Pod annotations (sent as the io.kubernetes.cri.pod-annotations capability). */
  annotations?: Record<string, string>;
  /** Shortcut for annotations[portmap-hostip/host-ip]. */
  hostIPAnnotation?: string;
}

/** Runtime arguments as containerd passes them for a pod sandbox. */
export function podRuntime(pod: Pod, opts: PodRuntimeOptions = {}): RuntimeConf {
  const annotations = { ...(opts.annotations ?? {}) };
  if (opts.hostIPAnnotation !== undefined) annotations[HOST_IP_ANNOTATION] = opts.hostIPAnnotation;
  const capabilityArgs: Record<string, unknown> = { [ANNOTATIONS_CAP]: annotations };
  if (opts.portMappings !== undefined) capabilityArgs["portMappings"] = opts.portMappings;
  return {
    containerID: pod.containerID,
    netns: pod.netnsPath,
    ifName: "eth0",
    args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=${pod.containerID};K8S_POD_UID=00000000-0000-4000-8000-${pod.containerID.length.toString().padStart(12, "0")}`,
    capabilityArgs,
  };
}
