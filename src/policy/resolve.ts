// Which destination IPs each hostPort mapping gets, and whether the pod may have them. Pure: the node's
// network is an input.
import type { Policy, PortMapping } from "../core/config.js";
import { CniError, Code } from "../core/errors.js";
import type { NodeNetwork } from "../core/node.js";
import { type HostIpAnnotation, portKey } from "./annotation.js";
import { type Family, type Ip, cidrContains, notUnicastReason } from "../core/ip.js";

const LOCALHOST: Ip = { family: 4, text: "127.0.0.1" };

/** Where a mapping's host IPs come from, before the node is consulted. */
export type HostIpSource =
  | { kind: "runtime"; ip: Ip }
  | { kind: "any" }
  | { kind: "annotation"; ips: Ip[] }
  | { kind: "defaultHostIP"; ips: Ip[] }
  | { kind: "node" };

const isWildcard = (ip: Ip) => ip.text === "0.0.0.0" || ip.text === "::";

/** The families portmap wrote rules in for this mapping (given a pod IP of that family). */
export function mappingFamilies(m: PortMapping): Family[] {
  return m.hostIp ? [m.hostIp.family] : [4, 6];
}

export function hostIpSource(m: PortMapping, policy: Policy, annotation: HostIpAnnotation | undefined): HostIpSource {
  if (m.hostIp && !isWildcard(m.hostIp)) return { kind: "runtime", ip: m.hostIp };
  const annotated = annotation?.byPort.get(portKey(m.hostPort, m.protocol)) ?? annotation?.all;
  if (annotated && annotated.length > 0) return { kind: "annotation", ips: annotated };
  const d = policy.defaultHostIp;
  return d.kind === "ips" ? { kind: "defaultHostIP", ips: d.ips } : d;
}

/** The node's addresses for policy "node", without the implicit 127.0.0.1. */
export function nodeAddresses(policy: Policy, network: NodeNetwork): Ip[] {
  if (policy.nodeIps) return policy.nodeIps;
  const ifaces = policy.nodeInterfaces;
  const global = network.addresses.filter((a) => a.scope === "global");
  const picked = ifaces
    ? global.filter((a) => ifaces.includes(a.ifname))
    : global.filter((a) => network.defaultRouteInterfaces[a.ip.family].includes(a.ifname));
  const ips: Ip[] = [];
  for (const { ip } of picked) if (!ips.some((x) => x.text === ip.text)) ips.push(ip);
  return ips;
}

/** Why `ip` may not be a host IP on this node; undefined when it may. */
export function refusal(ip: Ip, policy: Policy, network: NodeNetwork, checkAllowed: boolean): string | undefined {
  const notUnicast = notUnicastReason(ip);
  if (notUnicast) return `it is ${notUnicast}`;
  const holders = network.addresses.filter((a) => a.ip.text === ip.text);
  if (holders.length === 0) return "it is not an address of this node";
  const excluded = holders.find((a) => policy.excludeInterfaces.includes(a.ifname));
  if (excluded) return `it is on excluded interface ${excluded.ifname}`;
  const allowed = policy.allowedHostCidrs;
  if (checkAllowed && allowed && !allowed.some((c) => cidrContains(c, ip))) {
    return `it is outside allowedHostCIDRs (${allowed.map((c) => c.text).join(", ")})`;
  }
  return undefined;
}

export interface ResolvedMapping {
  mapping: PortMapping;
  source: HostIpSource["kind"];
  /** The host IPs to scope to; undefined: leave portmap's rules as they are. */
  ips: Ip[] | undefined;
}

const describe = (m: PortMapping) => `hostPort ${m.hostPort}/${m.protocol}`;

/**
 * Resolves and validates every mapping's host IPs. Throws a CniError naming the IP, the pod and the reason
 * for the first IP the pod may not have.
 */
export function resolveMappings(
  mappings: readonly PortMapping[],
  policy: Policy,
  annotation: HostIpAnnotation | undefined,
  network: NodeNetwork,
  pod: string,
): ResolvedMapping[] {
  let node: Ip[] | undefined;
  return mappings.map((mapping) => {
    const source = hostIpSource(mapping, policy, annotation);
    if (source.kind === "any") return { mapping, source: source.kind, ips: undefined };
    let ips: Ip[];
    let implicit: Ip | undefined;
    if (source.kind === "node") {
      node ??= nodeAddresses(policy, network);
      if (node.length === 0) {
        throw new CniError(Code.NoNodeAddress, `defaultHostIP "node" found no address of this node for pod ${pod}: set nodeIPs or nodeInterfaces`);
      }
      implicit = LOCALHOST;
      ips = [...node, LOCALHOST];
    } else {
      ips = source.kind === "runtime" ? [source.ip] : source.ips;
    }
    for (const ip of ips) {
      // The loopback that "node" adds keeps localhost:hostPort working as with portmap; it is not a pod's choice.
      const why = refusal(ip, policy, network, ip !== implicit);
      if (why) {
        throw new CniError(Code.HostIpNotAllowed, `host IP ${ip.text} (from ${source.kind}) for ${describe(mapping)} of pod ${pod} is not allowed: ${why}`);
      }
    }
    if (source.kind === "runtime") return { mapping, source: source.kind, ips: undefined };
    const wildcard = mapping.hostIp;
    // hostIP 0.0.0.0 or :: asks for one family only; portmap wrote nothing in the other.
    return { mapping, source: source.kind, ips: wildcard ? ips.filter((ip) => ip.family === wildcard.family) : ips };
  });
}

/** What the rule rewrite needs for one mapping in one family. */
export interface FamilyScope {
  protocol: PortMapping["protocol"];
  hostPort: number;
  /** Host IPs of this family; empty: the mapping gets no rules in this family. */
  ips: Ip[];
  /** Destinations of sibling mappings on the same port that the runtime scoped itself: not ours to touch. */
  foreign: Ip[];
}

/** Splits resolved mappings per family, refusing two mappings that would claim the same rules. */
export function scopesForFamily(resolved: readonly ResolvedMapping[], family: Family): FamilyScope[] {
  const inFamily = resolved.filter((r) => mappingFamilies(r.mapping).includes(family));
  const scopes: FamilyScope[] = [];
  for (const r of inFamily) {
    if (!r.ips) continue;
    const { protocol, hostPort } = r.mapping;
    const siblings = inFamily.filter((o) => o !== r && o.mapping.protocol === protocol && o.mapping.hostPort === hostPort);
    const foreign = siblings.flatMap((o) => (o.source === "runtime" && o.mapping.hostIp ? [o.mapping.hostIp] : []));
    const ips = r.ips.filter((ip) => ip.family === family);
    const twin = siblings.some((o) => o.source !== "runtime");
    if (twin || ips.some((ip) => foreign.some((f) => f.text === ip.text))) {
      throw new CniError(Code.InvalidConfig, `invalid network configuration: runtimeConfig.portMappings has ${describe(r.mapping)} more than once for the same host IPs`);
    }
    scopes.push({ protocol, hostPort, ips, foreign });
  }
  return scopes;
}
