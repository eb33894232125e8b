// Names the CNI protocol and libcni's cache carry: commands, container IDs, interface names, the pod in CNI_ARGS.
/** The plugin's type in a conflist. */
export const PLUGIN_TYPE = "portmap-hostip";

export const COMMANDS = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"] as const;
export type Command = (typeof COMMANDS)[number];

export interface CniEnv {
  command: Command;
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS as key/value pairs. */
  args: ReadonlyMap<string, string>;
}

const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export const isContainerId = (id: string): boolean => CONTAINER_ID.test(id);
// Linux IFNAMSIZ is 16 including the NUL.
const IFNAME_MAX = 15;

export function isInterfaceName(name: string): boolean {
  return name.length >= 1 && name.length <= IFNAME_MAX && name !== "." && name !== ".." && !/[/:\s]/.test(name);
}

/** A Kubernetes pod as kubelet's CNI_ARGS name it. */
export interface KubePod {
  namespace: string;
  name: string;
  uid: string | undefined;
}

/** The pod, from kubelet's CNI_ARGS; undefined when they do not say. */
export function kubePod(args: ReadonlyMap<string, string>): KubePod | undefined {
  const namespace = args.get("K8S_POD_NAMESPACE");
  const name = args.get("K8S_POD_NAME");
  return namespace && name ? { namespace, name, uid: args.get("K8S_POD_UID") || undefined } : undefined;
}

/** namespace/name of the pod, from kubelet's CNI_ARGS; undefined when they do not say. */
export function kubernetesPod(args: ReadonlyMap<string, string>): string | undefined {
  const pod = kubePod(args);
  return pod && `${pod.namespace}/${pod.name}`;
}

/** How error messages name the pod: namespace/name and container ID, else the container ID. */
export function podLabel(env: CniEnv): string {
  const pod = kubernetesPod(env.args);
  return pod ? `${pod} (container ${env.containerId})` : `container ${env.containerId}`;
}
