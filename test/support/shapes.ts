// Node shapes beyond the tidy one-uplink node of topology.ts, built on it: what real nodes look like. Each
// builder changes the node of a fresh topology and returns what tests need to reach it.
import { runOk } from "./exec.js";
import { ipIn, nsRunOk, sysctlIn } from "./netns.js";
import { CLIENT_IP6, IPVS_DEVICE, NODE_IP1, NODE_IP2, type Topology, UPLINK } from "./topology.js";

/** The second uplink's network (TEST-NET-2 and a second IPv6 /64). */
export const UPLINK2 = "uplink2";
export const UPLINK2_IP = "198.51.100.10";
export const UPLINK2_IP6 = "2001:db8:2::10";
const UPLINK2_CLIENT = ["198.51.100.100/24", "2001:db8:2::100/64"];

/** A second uplink with its own client namespace, no route of its own yet. Returns the client namespace. */
function secondUplink(topo: Topology, nodeCidrs = [`${UPLINK2_IP}/24`, `${UPLINK2_IP6}/64`]): Promise<string> {
  return topo.addUplink(UPLINK2, nodeCidrs, "client2", UPLINK2_CLIENT);
}

/** IPv4 default route over both uplinks (ECMP), as `ip route add default nexthop … nexthop …` writes it. */
export async function ecmpUplinks(topo: Topology): Promise<string> {
  const client2 = await secondUplink(topo);
  await ipIn(
    topo.node,
    "route",
    "replace",
    "default",
    "nexthop",
    "via",
    "192.0.2.1",
    "dev",
    UPLINK,
    "nexthop",
    "via",
    "198.51.100.1",
    "dev",
    UPLINK2,
  );
  return client2;
}

/** IPv6 default route over both uplinks through a nexthop group, as FRR installs it (`nhid`). */
export async function ecmpNexthopGroup6(topo: Topology): Promise<string> {
  const client2 = await secondUplink(topo);
  await ipIn(topo.node, "nexthop", "add", "id", "61", "via", "2001:db8::1", "dev", UPLINK);
  await ipIn(topo.node, "nexthop", "add", "id", "62", "via", "2001:db8:2::1", "dev", UPLINK2);
  await ipIn(topo.node, "nexthop", "add", "id", "60", "group", "61/62");
  await ipIn(topo.node, "-6", "route", "replace", "default", "nhid", "60");
  return client2;
}

/**
 * A second uplink whose default routes, of both families, are in policy-routing table 100 only (source-based
 * routing for its addresses): the main table's default routes stay on the first uplink.
 */
export async function sourceRoutedUplink(topo: Topology): Promise<string> {
  const client2 = await secondUplink(topo);
  for (const [family, via, from] of [
    ["-4", "198.51.100.1", UPLINK2_IP],
    ["-6", "2001:db8:2::1", UPLINK2_IP6],
  ] as const) {
    await ipIn(topo.node, family, "route", "add", "default", "via", via, "dev", UPLINK2, "table", "100");
    await ipIn(topo.node, family, "rule", "add", "from", from, "table", "100");
  }
  return client2;
}

/** A private NIC (the node's InternalIP network) without the default route. */
export const PRIVATE_IP = UPLINK2_IP;
export function privateNic(topo: Topology): Promise<string> {
  return secondUplink(topo, [`${PRIVATE_IP}/24`]);
}

/** The node's address announced by BGP on `lo` (a /32), reached by the client through the uplink. */
export const LOOPBACK_NODE_IP = "198.51.100.50";
export async function loopbackNodeIp(topo: Topology): Promise<void> {
  await ipIn(topo.node, "addr", "add", `${LOOPBACK_NODE_IP}/32`, "dev", "lo");
  await ipIn(topo.client, "route", "add", `${LOOPBACK_NODE_IP}/32`, "via", NODE_IP1);
}

/** The uplink without carrier (its peer down): the kernel keeps its routes, flagged `linkdown`. */
export function uplinkWithoutCarrier(topo: Topology, carrier: boolean): Promise<string> {
  return ipIn(topo.client, "link", "set", "eth0", carrier ? "up" : "down");
}

/** The uplink enslaved to a bridge that holds the node's address and the default route (a VM host's br0). */
export const BRIDGE = "br0";
export async function bridgeUplink(topo: Topology): Promise<string> {
  const client2 = await secondUplink(topo, []);
  await ipIn(topo.node, "link", "add", BRIDGE, "type", "bridge");
  await ipIn(topo.node, "link", "set", UPLINK2, "master", BRIDGE);
  await ipIn(topo.node, "addr", "add", `${UPLINK2_IP}/24`, "dev", BRIDGE);
  await ipIn(topo.node, "link", "set", BRIDGE, "up");
  await ipIn(topo.node, "route", "replace", "default", "via", "198.51.100.1", "dev", BRIDGE);
  return client2;
}

/**
 * A sub-interface holding the address and the default route over a lower device that has none: a VLAN
 * interface (eth0.100) on a node; built as macvlan, since this kernel has no 8021q module.
 */
export const SUB_INTERFACE = "uplink2.100";
export async function subInterfaceUplink(topo: Topology): Promise<string> {
  const client2 = await secondUplink(topo, []);
  await ipIn(topo.node, "link", "add", "link", UPLINK2, "name", SUB_INTERFACE, "type", "macvlan", "mode", "bridge");
  await ipIn(topo.node, "addr", "add", `${UPLINK2_IP}/24`, "dev", SUB_INTERFACE);
  await ipIn(topo.node, "link", "set", SUB_INTERFACE, "up");
  await ipIn(topo.node, "route", "replace", "default", "via", "198.51.100.1", "dev", SUB_INTERFACE);
  return client2;
}

/** kube-proxy (IPVS) or k3s ServiceLB binding a Service IP that equals a node address. */
export function serviceIpOnNodeAddress(topo: Topology, ip = NODE_IP2): Promise<string> {
  return ipIn(topo.node, "addr", "add", `${ip}/32`, "dev", IPVS_DEVICE);
}

/**
 * kube-proxy (IPVS) on a cluster with many Services: `count` Service IPs (10.100.0.0/16) on kube-ipvs0, which
 * is then set down as kube-proxy leaves it (its addresses stay local). Enough to pass the plugin's threshold
 * for reading only the up interfaces' addresses (1,000 local prefixes).
 */
export function manyServiceIps(topo: Topology, count: number): Promise<string> {
  const lines = Array.from({ length: count }, (_, i) => `addr add 10.100.${i >> 8}.${i & 255}/32 dev ${IPVS_DEVICE}\n`);
  return runOk("ip", ["-n", topo.node, "-batch", "-"], { input: lines.join("") }).then(() =>
    ipIn(topo.node, "link", "set", IPVS_DEVICE, "down"),
  );
}

/**
 * The same on an IPv6-only cluster: `count` IPv6 Service IPs (fd00:10:96::/112) on kube-ipvs0, added once it is
 * down (an interface going down drops its IPv6 addresses unless keep_addr_on_down is set).
 */
export async function manyServiceIps6(topo: Topology, count: number): Promise<void> {
  await ipIn(topo.node, "link", "set", IPVS_DEVICE, "down");
  const lines = Array.from(
    { length: count },
    (_, i) => `addr add fd00:10:96::${i.toString(16)}/128 dev ${IPVS_DEVICE} nodad\n`,
  );
  await runOk("ip", ["-n", topo.node, "-batch", "-"], { input: lines.join("") });
}

/** A secondary IPv4 address with a label (`uplink:1`, as ifconfig-era tools name it). */
export const LABELLED_IP = "192.0.2.12";
export function labelledAddress(topo: Topology): Promise<string> {
  return ipIn(topo.node, "addr", "add", `${LABELLED_IP}/24`, "dev", UPLINK, "label", `${UPLINK}:1`);
}

/** An IPv6 address whose preferred lifetime ended (a renumbered SLAAC prefix): deprecated, still valid. */
export const DEPRECATED_IP6 = "2001:db8::12";
export function deprecatedAddress(topo: Topology): Promise<string> {
  return ipIn(topo.node, "-6", "addr", "add", `${DEPRECATED_IP6}/64`, "dev", UPLINK, "nodad", "preferred_lft", "0");
}

/**
 * The client's own IPv6 address added to the uplink with DAD on: duplicate address detection fails. The
 * client's answer to the probe is sometimes missed (a veth that just came up): the address is then added again.
 */
export const DUPLICATE_IP6 = CLIENT_IP6;
export async function duplicateAddress(topo: Topology, attempts = 5): Promise<void> {
  await sysctlIn(topo.node, { [`net.ipv6.conf.${UPLINK}.accept_dad`]: 1 });
  const state = async () => {
    const out = await nsRunOk(topo.node, "ip", ["-6", "addr", "show", "dev", UPLINK, "to", `${DUPLICATE_IP6}/128`]);
    return out.includes("dadfailed") ? "failed" : out.includes("tentative") ? "tentative" : "valid";
  };
  for (let i = 0; i < attempts; i++) {
    await ipIn(topo.node, "-6", "addr", "add", `${DUPLICATE_IP6}/64`, "dev", UPLINK);
    // DAD takes up to about 2 s (a random delay of up to 1 s, one probe, 1 s for an answer).
    for (let wait = 0; wait < 50 && (await state()) === "tentative"; wait++)
      await new Promise((r) => setTimeout(r, 100));
    if ((await state()) === "failed") return;
    await ipIn(topo.node, "-6", "addr", "del", `${DUPLICATE_IP6}/64`, "dev", UPLINK);
  }
  throw new Error(`${DUPLICATE_IP6} never failed DAD in ${attempts} attempts`);
}
