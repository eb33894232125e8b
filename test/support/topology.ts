// The e2e topology: a `node` namespace (the runtime's host netns, where plugins run) with an uplink to a
// `client` namespace, a kube-ipvs0 device holding a ClusterIP, and pod namespaces added on demand.
//
//   client eth0 192.0.2.100/24 2001:db8::100/64 ──veth── uplink 192.0.2.10/24 192.0.2.11/24 2001:db8::10/64  (node)
//   node: default via 192.0.2.1 / 2001:db8::1, kube-ipvs0 (bridge) 10.96.0.50/32, ip_forward on
//   client: 10.96.0.0/12 via 192.0.2.10
import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import {
  addNetns,
  deleteNetns,
  ipIn,
  makeTempDir,
  netnsPath,
  removeTempDir,
  spawnInNs,
  stopChild,
  sysctlIn,
  uniquePrefix,
  waitNoTentative,
} from "./netns.js";
import { ECHO_NET_SCRIPT } from "./paths.js";

export const NODE_IP1 = "192.0.2.10";
export const NODE_IP2 = "192.0.2.11";
export const NODE_IP6 = "2001:db8::10";
export const CLIENT_IP = "192.0.2.100";
export const CLIENT_IP6 = "2001:db8::100";
export const CLUSTER_IP = "10.96.0.50";
/** An address that belongs to nobody in the topology. */
export const FOREIGN_IP = "198.51.100.7";
export const UPLINK = "uplink";
export const IPVS_DEVICE = "kube-ipvs0";

// IPv6 in namespaces: forwarding must be on in `default` before devices exist, and DAD would drop first packets.
const IPV6_SETTINGS = {
  "net.ipv6.conf.all.accept_dad": 0,
  "net.ipv6.conf.default.accept_dad": 0,
};

export interface Pod {
  /** Short name, e.g. "a"; also the default server identity is `pod-<name>`. */
  name: string;
  ns: string;
  netnsPath: string;
  containerID: string;
}

export interface Topology {
  prefix: string;
  node: string;
  client: string;
  /** A temporary directory for this topology (host-local dataDir etc.), removed by destroy(). */
  tmpDir: string;
  /** host-local's dataDir inside tmpDir. */
  ipamDataDir: string;
  /** Creates the pod's network namespace (the sandbox); the CNI chain creates its interfaces. */
  addPod(name: string, containerID?: string): Promise<Pod>;
  /** Deletes a pod's namespace (after its CNI DEL), stopping servers in it. */
  removePod(pod: Pod): Promise<void>;
  /** Starts an identity server inside `ns` answering `identity` on each tcp/udp port. */
  serve(ns: string, identity: string, ports: { tcp?: number[]; udp?: number[] }, bind?: string): Promise<void>;
  /** Starts the pod's server answering `pod-<name>` on all its addresses. */
  servePod(pod: Pod, ports: { tcp?: number[]; udp?: number[] }): Promise<void>;
  /** Starts a "Service" listener in the node, bound to the ClusterIP, answering `service`. */
  serveService(ports: { tcp?: number[]; udp?: number[] }): Promise<void>;
  /**
   * Connects the node to a new client namespace (`<prefix>-<client>`) over a veth pair, `ifname` in the node
   * and eth0 in the client, both up, with these addresses (CIDRs; IPv6 ones without DAD). Returns the client
   * namespace. The node's routes are the caller's.
   */
  addUplink(
    ifname: string,
    nodeCidrs: readonly string[],
    client: string,
    clientCidrs: readonly string[],
  ): Promise<string>;
  /** Waits for IPv6 DAD to finish in the node, the clients and every pod. */
  settleIPv6(): Promise<void>;
  destroy(): Promise<void>;
}

export async function createTopology(): Promise<Topology> {
  const prefix = uniquePrefix();
  const node = `${prefix}-node`;
  const client = `${prefix}-client`;
  const tmpDir = makeTempDir(prefix);
  const pods = new Map<string, Pod>();
  const servers = new Map<string, ChildProcess[]>();
  const created: string[] = [];
  const clients: string[] = [];

  const topo: Topology = {
    prefix,
    node,
    client,
    tmpDir,
    ipamDataDir: join(tmpDir, "ipam"),
    async addPod(name, containerID = `${prefix}-${name}`.replace(/[^a-zA-Z0-9_.-]/g, "")) {
      const ns = `${prefix}-pod-${name}`;
      await addNetns(ns);
      created.push(ns);
      await sysctlIn(ns, IPV6_SETTINGS);
      const pod = { name, ns, netnsPath: netnsPath(ns), containerID };
      pods.set(ns, pod);
      return pod;
    },
    async removePod(pod) {
      for (const child of servers.get(pod.ns) ?? []) await stopChild(child);
      servers.delete(pod.ns);
      pods.delete(pod.ns);
      await deleteNetns(pod.ns);
    },
    async serve(ns, identity, ports, bind = "::") {
      const specs = [...(ports.tcp ?? []).map((p) => `tcp:${p}`), ...(ports.udp ?? []).map((p) => `udp:${p}`)];
      const child = await spawnInNs(
        ns,
        process.execPath,
        [ECHO_NET_SCRIPT, "serve", identity, bind, ...specs],
        "ready",
      );
      servers.set(ns, [...(servers.get(ns) ?? []), child]);
    },
    servePod(pod, ports) {
      return topo.serve(pod.ns, `pod-${pod.name}`, ports);
    },
    serveService(ports) {
      return topo.serve(node, "service", ports, CLUSTER_IP);
    },
    async addUplink(ifname, nodeCidrs, clientName, clientCidrs) {
      const ns = `${prefix}-${clientName}`;
      await addNetns(ns);
      created.push(ns);
      clients.push(ns);
      await sysctlIn(ns, IPV6_SETTINGS);
      // The veth is created inside the node namespace and its peer moved straight into the client: nothing
      // ever appears in the machine's own namespace.
      await ipIn(node, "link", "add", ifname, "type", "veth", "peer", "name", "eth0", "netns", ns);
      const address = (where: string, dev: string, cidr: string) =>
        cidr.includes(":")
          ? ipIn(where, "-6", "addr", "add", cidr, "dev", dev, "nodad")
          : ipIn(where, "addr", "add", cidr, "dev", dev);
      for (const cidr of nodeCidrs) await address(node, ifname, cidr);
      for (const cidr of clientCidrs) await address(ns, "eth0", cidr);
      await ipIn(node, "link", "set", ifname, "up");
      await ipIn(ns, "link", "set", "eth0", "up");
      return ns;
    },
    async settleIPv6() {
      for (const ns of [node, ...clients, ...pods.keys()]) await waitNoTentative(ns);
    },
    async destroy() {
      const errors: unknown[] = [];
      for (const list of servers.values())
        for (const child of list) await stopChild(child).catch((e: unknown) => errors.push(e));
      servers.clear();
      for (const ns of created.reverse()) await deleteNetns(ns).catch((e: unknown) => errors.push(e));
      try {
        removeTempDir(tmpDir);
      } catch (e) {
        errors.push(e);
      }
      if (errors.length > 0) throw new AggregateError(errors, `cleanup of ${prefix} failed`);
    },
  };

  try {
    await addNetns(node);
    created.push(node);
    await sysctlIn(node, {
      ...IPV6_SETTINGS,
      "net.ipv4.ip_forward": 1,
      "net.ipv6.conf.default.forwarding": 1,
      "net.ipv6.conf.all.forwarding": 1,
    });
    await topo.addUplink(UPLINK, [`${NODE_IP1}/24`, `${NODE_IP2}/24`, `${NODE_IP6}/64`], "client", [
      `${CLIENT_IP}/24`,
      `${CLIENT_IP6}/64`,
    ]);
    await ipIn(node, "route", "add", "default", "via", "192.0.2.1", "dev", UPLINK);
    await ipIn(node, "-6", "route", "add", "default", "via", "2001:db8::1", "dev", UPLINK);
    await ipIn(client, "route", "add", "10.96.0.0/12", "via", NODE_IP1);

    // kube-proxy (IPVS) keeps every ClusterIP on kube-ipvs0 as a LOCAL address; no dummy module here, a bridge does.
    await ipIn(node, "link", "add", IPVS_DEVICE, "type", "bridge");
    await ipIn(node, "addr", "add", `${CLUSTER_IP}/32`, "dev", IPVS_DEVICE);
    await ipIn(node, "link", "set", IPVS_DEVICE, "up");
  } catch (e) {
    await topo.destroy().catch(() => {});
    throw e;
  }
  return topo;
}
