// The model test's node and its policy, computed independently of the plugin: which addresses the node has,
// the networks on it, what each pod asks for, and which DNAT rules (coverage) each pod's rules must hold in
// each family — by the host-IP policy as docs/policy.md states it, not by calling the plugin's resolver.
// Pure: no I/O.
import { CLUSTER_IP, FOREIGN_IP, NODE_IP1, NODE_IP2, NODE_IP6 } from "../topology.js";

export type Family = 4 | 6;
export type Proto = "tcp" | "udp";
export const FAMILIES: readonly Family[] = [4, 6];

/** Node addresses that come and go during a run (on the uplink, where the default routes are). */
export const NEW_IP = "192.0.2.12";
export const NEW_IP6 = "2001:db8::12";
/** A second Service IP on kube-ipvs0. */
export const CLUSTER_IP2 = "10.96.0.51";
export const LOCALHOST = "127.0.0.1";
/** Every uplink address a node may have in a run, per family. */
export const UPLINK_ADDRESSES = { 4: [NODE_IP1, NODE_IP2, NEW_IP], 6: [NODE_IP6, NEW_IP6] } as const;
export const OPTIONAL_ADDRESS = { 4: NEW_IP, 6: NEW_IP6 } as const;
/** The uplink addresses the topology starts with. */
export const INITIAL_ADDRESSES = { 4: [NODE_IP1, NODE_IP2], 6: [NODE_IP6] } as const;

/** The Services: a listener on a ClusterIP answering `identity` on these ports. */
export const SERVICES = [
  { ip: CLUSTER_IP, identity: "service-a", tcp: [8080], udp: [5353] },
  { ip: CLUSTER_IP2, identity: "service-b", tcp: [8082], udp: [5354] },
] as const;

/** The hostPorts pods choose from: few, so that pods share them (on different addresses). */
export const PORTS: Record<Proto, readonly number[]> = {
  tcp: [8080, 8081, 8082, 8083, 8084, 8085, 8086],
  udp: [5353, 5354, 5355, 5356],
};
/** The port each protocol's mapping goes to in the pod (its echo server listens there). */
export const CONTAINER_PORT: Record<Proto, number> = { tcp: 80, udp: 53 };

/** Where a network's portmap writes its rules. */
export type RuleTable = "iptables-nft" | "iptables-legacy" | "nftables";
export type Variant = "nft" | "legacy";
export const VARIANT_TABLE: Record<Variant, RuleTable> = { nft: "iptables-nft", legacy: "iptables-legacy" };

export interface NetworkSpec {
  name: string;
  bridge: string;
  subnet4: string;
  subnet6?: string;
  /** Debian's portmap 1.1.1, or v1.9.1 (../shared/bin). */
  portmap: "debian" | "v1.9.1";
  table: RuleTable;
  defaultHostIP: "node" | "any" | readonly string[];
  /** Its conflist is the one in the keeper's conf dir, which the network plugin rewrites now and then. */
  managed: boolean;
}

/**
 * The node's networks: every place portmap writes (both iptables variants, as on a mixed node, and its nftables
 * backend), several policies, both families.
 */
export const NETWORKS: readonly NetworkSpec[] = [
  {
    name: "cbr0",
    bridge: "cni0",
    subnet4: "10.244.0.0/18",
    subnet6: "2001:db8:244:1::/64",
    portmap: "debian",
    table: "iptables-nft",
    defaultHostIP: "node",
    managed: true,
  },
  {
    name: "nftnet",
    bridge: "cni1",
    subnet4: "10.244.64.0/18",
    subnet6: "2001:db8:244:2::/64",
    portmap: "v1.9.1",
    table: "nftables",
    defaultHostIP: [NODE_IP2, NEW_IP, NODE_IP6, NEW_IP6],
    managed: false,
  },
  {
    // The mixed node's network: its plugins run iptables-legacy while kubelet and kube-proxy run iptables-nft.
    name: "legnet",
    bridge: "cni3",
    subnet4: "10.244.192.0/18",
    subnet6: "2001:db8:244:3::/64",
    portmap: "debian",
    table: "iptables-legacy",
    defaultHostIP: "node",
    managed: false,
  },
  {
    name: "anynet",
    bridge: "cni2",
    subnet4: "10.244.128.0/18",
    portmap: "v1.9.1",
    table: "iptables-nft",
    defaultHostIP: "any",
    managed: false,
  },
];

export interface Mapping {
  proto: Proto;
  hostPort: number;
  containerPort: number;
  /** The runtime's hostIP: "" (none), "0.0.0.0" (IPv4 only) or a node address (portmap scopes it itself). */
  hostIP: string;
}

/** The host-IP annotation as the model writes it: plain entries and entries for one port. */
export interface Annotation {
  all: string[];
  byPort: Array<{ port: number; proto: Proto; ips: string[] }>;
}

export function annotationText(a: Annotation): string {
  return [...a.all, ...a.byPort.flatMap((e) => e.ips.map((ip) => `${e.port}/${e.proto}=${ip}`))].join(", ");
}

/** What a pod asks for: its mappings and annotation. */
export interface PodAsk {
  mappings: Mapping[];
  annotation?: Annotation;
}

/** The node's uplink addresses present now. */
export interface NodeAddresses {
  4: readonly string[];
  6: readonly string[];
}

export const familyOf = (ip: string): Family => (ip.includes(":") ? 6 : 4);

/** The families portmap writes a mapping's rules in. */
function mappingFamilies(m: Mapping): Family[] {
  if (m.hostIP === "0.0.0.0") return [4];
  return m.hostIP === "" ? [4, 6] : [familyOf(m.hostIP)];
}

/** The families a pod gets rules in for a mapping: where it has an address and portmap writes. */
function ruleFamilies(m: Mapping, podFamilies: readonly Family[]): Family[] {
  return mappingFamilies(m).filter((f) => podFamilies.includes(f));
}

const specificHostIP = (m: Mapping) => m.hostIP !== "" && m.hostIP !== "0.0.0.0";

/** The annotation's addresses for a mapping (its port's entries beat the plain ones); empty: the default. */
function annotated(a: Annotation | undefined, m: Mapping): string[] {
  const byPort = a?.byPort.filter((e) => e.port === m.hostPort && e.proto === m.proto).flatMap((e) => e.ips) ?? [];
  return byPort.length > 0 ? byPort : (a?.all ?? []);
}

/** Whether an address may be a host IP now: an address of the node, on the uplink (not kube-ipvs0). */
const allowed = (ip: string, node: NodeAddresses) => node[familyOf(ip)].includes(ip);

/**
 * The destinations of a mapping's rules in a family, by the policy; "refused" when the pod or the runtime
 * asked for an address it may not have now. "*": unscoped (every local address).
 */
function destinations(
  net: NetworkSpec,
  ask: PodAsk,
  m: Mapping,
  family: Family,
  podFamilies: readonly Family[],
  node: NodeAddresses,
): string[] | "refused" {
  const judged = ruleFamilies(m, podFamilies);
  if (!judged.includes(family)) return [];
  if (specificHostIP(m)) return allowed(m.hostIP, node) ? [m.hostIP] : "refused";
  const asked = annotated(ask.annotation, m);
  if (asked.length > 0) {
    if (asked.some((ip) => judged.includes(familyOf(ip)) && !allowed(ip, node))) return "refused";
    return asked.filter((ip) => familyOf(ip) === family);
  }
  const d = net.defaultHostIP;
  if (d === "any") return ["*"];
  if (d === "node") return [...node[family], ...(family === 4 ? [LOCALHOST] : [])];
  return d.filter((ip) => familyOf(ip) === family && allowed(ip, node));
}

/** One DNAT rule as the model compares rules: `tcp/8080@192.0.2.10>10.244.0.5:80` (`@*`: no destination). */
export function entry(m: Pick<Mapping, "proto" | "hostPort">, dest: string, target: string): string {
  return `${m.proto}/${m.hostPort}@${dest}>${target}`;
}

/** A pod address and port as a DNAT target prints it. */
export function dnatTarget(podIP: string, port: number): string {
  return podIP.includes(":") ? `[${podIP}]:${port}` : `${podIP}:${port}`;
}

/** A family's rules of a pod as one comparable string: its DNAT entries, sorted; "" when it has none. */
export const coverageKey = (entries: Iterable<string>): string => [...new Set(entries)].sort().join(" ");

export interface PodAddresses {
  4?: string;
  6?: string;
}

const podFamiliesOf = (ips: PodAddresses): Family[] => FAMILIES.filter((f) => ips[f] !== undefined);

/** The coverage the policy gives the pod in one family now, or "refused". */
export function decided(
  net: NetworkSpec,
  ask: PodAsk,
  ips: PodAddresses,
  family: Family,
  node: NodeAddresses,
): string | "refused" {
  const families = podFamiliesOf(ips);
  const out: string[] = [];
  for (const m of ask.mappings) {
    // A refusal in any family refuses the pod.
    for (const f of families) if (destinations(net, ask, m, f, families, node) === "refused") return "refused";
    const dests = destinations(net, ask, m, family, families, node) as string[];
    for (const d of dests) out.push(entry(m, d, dnatTarget(ips[family] as string, m.containerPort)));
  }
  return coverageKey(out);
}

/** What portmap alone writes in one family: unscoped, except where the runtime passed a hostIP. */
export function unscoped(ask: PodAsk, ips: PodAddresses, family: Family): string {
  const families = podFamiliesOf(ips);
  const out: string[] = [];
  for (const m of ask.mappings) {
    if (!ruleFamilies(m, families).includes(family)) continue;
    out.push(entry(m, specificHostIP(m) ? m.hostIP : "*", dnatTarget(ips[family] as string, m.containerPort)));
  }
  return coverageKey(out);
}

/** Whether the policy leaves every mapping of the pod unscoped (the plugin then reads and checks nothing). */
export function nothingToScope(net: NetworkSpec, ask: PodAsk): boolean {
  return (
    net.defaultHostIP === "any" &&
    ask.mappings.every((m) => !specificHostIP(m) && annotated(ask.annotation, m).length === 0)
  );
}

/**
 * Every address a mapping may ever cover (whatever addresses come and go): what two pods on the same port must
 * not share, or who answers there would depend on rule order. "*": every local address.
 */
export function claim(net: NetworkSpec, ask: PodAsk, m: Mapping, podFamilies: readonly Family[]): Set<string> {
  const families = ruleFamilies(m, podFamilies);
  const of = (ips: readonly string[]) => new Set(ips.filter((ip) => families.includes(familyOf(ip))));
  if (specificHostIP(m)) return of([m.hostIP]);
  const asked = annotated(ask.annotation, m);
  if (asked.length > 0) return of(asked);
  const d = net.defaultHostIP;
  if (d === "any") return new Set(["*"]);
  if (d === "node") return of([...UPLINK_ADDRESSES[4], ...UPLINK_ADDRESSES[6], LOCALHOST]);
  return of(d);
}

export const claimsMeet = (a: ReadonlySet<string>, b: ReadonlySet<string>): boolean =>
  (a.has("*") && b.size > 0) || (b.has("*") && a.size > 0) || [...a].some((x) => b.has(x));

/** Addresses a pod may ask for that the policy refuses: another node's, a Service's. */
export const REFUSED_ADDRESSES = [FOREIGN_IP, CLUSTER_IP] as const;

/** The addresses the model probes, per family: the node's, the Services', localhost (from the node itself). */
export function probeAddresses(node: NodeAddresses): string[] {
  return [...node[4], ...node[6], ...SERVICES.map((s) => s.ip), LOCALHOST];
}

/** Whether a coverage entry's destination (of the address's family) takes traffic for `address`. */
export const covers = (dest: string, address: string): boolean => dest === "*" || dest === address;
