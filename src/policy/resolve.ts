// Which destination IPs each hostPort mapping gets, and whether the pod may have them. Pure: the node's
// network is an input.
import type { Policy, PortMapping } from "../core/config.js";
import { CniError, Code } from "../core/errors.js";
import { cidrContains, type Family, type Ip, notUnicastReason } from "../core/ip.js";
import type { NodeNetwork } from "../core/node.js";
import { type HostIpAnnotation, portKey } from "./annotation.js";

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

/**
 * The node's addresses for policy "node", without the implicit 127.0.0.1 and before the policy judges them:
 * `nodeIPs` alone when set; else the global addresses of `nodeInterfaces` (or of every interface holding a
 * default route of that family), plus `kubeNodeIPs`. IPv6 privacy addresses are left out: nobody connects to
 * them, and they change every day.
 */
export function nodeAddresses(policy: Policy, network: NodeNetwork): Ip[] {
  if (policy.nodeIps) return policy.nodeIps;
  const ifaces = policy.nodeInterfaces;
  const global = network.addresses.filter((a) => a.scope === "global" && !a.temporary);
  const picked = ifaces
    ? global.filter((a) => ifaces.includes(a.ifname))
    : global.filter((a) => network.defaultRouteInterfaces[a.ip.family].includes(a.ifname));
  const ips: Ip[] = [];
  for (const ip of [...picked.map((a) => a.ip), ...(policy.kubeNodeIps ?? [])])
    if (!ips.some((x) => x.text === ip.text)) ips.push(ip);
  return ips;
}

/**
 * Every address `resolveMappings` may judge for these mappings (a superset: both families): the pod's and the
 * runtime's choices, the defaultHostIP list, and for "node" the node's addresses and 127.0.0.1. Which ones
 * these are never depends on whether they pass: a reader may list only their holders (host/network.ts).
 */
export function judgedIps(
  mappings: readonly PortMapping[],
  policy: Policy,
  annotation: HostIpAnnotation | undefined,
  network: NodeNetwork,
): Ip[] {
  const ips = new Map<string, Ip>();
  for (const m of mappings) {
    const source = hostIpSource(m, policy, annotation);
    const add =
      source.kind === "runtime"
        ? [source.ip]
        : source.kind === "annotation" || source.kind === "defaultHostIP"
          ? source.ips
          : source.kind === "node"
            ? [...nodeAddresses(policy, network), LOCALHOST]
            : [];
    for (const ip of add) ips.set(ip.text, ip);
  }
  return [...ips.values()];
}

/** Why `ip` may not be a host IP on this node; undefined when it may. */
export function refusal(ip: Ip, policy: Policy, network: NodeNetwork, checkAllowed: boolean): string | undefined {
  const notUnicast = notUnicastReason(ip);
  if (notUnicast) return `it is ${notUnicast}`;
  const holders = network.addresses.filter((a) => a.ip.text === ip.text);
  if (holders.length === 0) return "it is not an address of this node";
  // Also when it is on an uplink too: kube-proxy (IPVS) and k3s ServiceLB put Service IPs equal to node addresses there.
  const excluded = holders.find((a) => policy.excludeInterfaces.includes(a.ifname));
  if (excluded) return `it is on excluded interface ${excluded.ifname}`;
  if (holders.every((a) => a.dadFailed)) return "it failed duplicate address detection: the kernel does not use it";
  const allowed = policy.allowedHostCidrs;
  if (checkAllowed && allowed && !allowed.some((c) => cidrContains(c, ip))) {
    return `it is outside allowedHostCIDRs (${allowed.map((c) => c.text).join(", ")})`;
  }
  return undefined;
}

export interface LeftOut {
  ip: Ip;
  why: string;
}

export interface ResolvedMapping {
  mapping: PortMapping;
  source: HostIpSource["kind"];
  /** The host IPs to scope to, of the families judged; undefined: leave portmap's rules as they are. */
  ips: Ip[] | undefined;
  /** Addresses of the default (not the pod's or the runtime's choice) that fail the policy: not used. */
  leftOut: LeftOut[];
  /** The default left no address but the implicit 127.0.0.1: closed to the outside until addresses appear. */
  closed: boolean;
  /** Why, when closed (closedReason). */
  reason?: string;
}

const describe = (m: PortMapping) => `hostPort ${m.hostPort}/${m.protocol}`;

/** "IPv4", "IPv4 and IPv6". */
export const familiesText = (families: readonly Family[]): string => families.map((f) => `IPv${f}`).join(" and ");

/**
 * Resolves and judges every mapping's host IPs, in the families the pod gets rules for (`families`: where
 * it has an address). An address the pod (annotation) or the runtime asked for that fails the policy is
 * refused: a CniError naming the IP, the pod and the reason; so is an annotation that gives the mapping no
 * address in any family it is judged in. The default never fails a pod: what fails is
 * left out (`leftOut`), and a mapping left with nothing is `closed`.
 */
export function resolveMappings(
  mappings: readonly PortMapping[],
  policy: Policy,
  annotation: HostIpAnnotation | undefined,
  network: NodeNetwork,
  pod: string,
  families: ReadonlySet<Family>,
): ResolvedMapping[] {
  let node: Ip[] | undefined;
  return mappings.map((mapping) => {
    const source = hostIpSource(mapping, policy, annotation);
    if (source.kind === "any") return { mapping, source: source.kind, ips: undefined, leftOut: [], closed: false };
    // hostIP 0.0.0.0 or :: asks for one family only; portmap wrote nothing in the other.
    const judged = mappingFamilies(mapping).filter((f) => families.has(f));
    const inScope = (ip: Ip) => judged.includes(ip.family);
    if (source.kind === "runtime" || source.kind === "annotation") {
      const asked = source.kind === "runtime" ? [source.ip] : source.ips;
      for (const ip of asked.filter(inScope)) {
        const why = refusal(ip, policy, network, true);
        if (why)
          throw new CniError(
            Code.HostIpNotAllowed,
            `host IP ${ip.text} (from ${source.kind}) for ${describe(mapping)} of pod ${pod} is not allowed: ${why}`,
          );
      }
      // The pod's own choice that leaves the port on no address can never be met: refused, not started closed.
      if (source.kind === "annotation" && judged.length > 0 && !asked.some(inScope))
        throw new CniError(
          Code.HostIpNotAllowed,
          `host IP${asked.length > 1 ? "s" : ""} ${asked.map((ip) => ip.text).join(", ")} (from annotation) for ${describe(mapping)} of pod ${pod} ${asked.length > 1 ? "are" : "is"} not allowed: no address of the pod's families (${familiesText(judged)}): the hostPort would answer on none`,
        );
      // portmap scoped the runtime's hostIP itself.
      return {
        mapping,
        source: source.kind,
        ips: source.kind === "runtime" ? undefined : source.ips.filter(inScope),
        leftOut: [],
        closed: false,
      };
    }
    if (source.kind === "node") node ??= nodeAddresses(policy, network);
    const candidates = (source.kind === "node" ? (node ?? []) : source.ips).filter(inScope);
    const ips: Ip[] = [];
    const leftOut: LeftOut[] = [];
    for (const ip of candidates) {
      const why = refusal(ip, policy, network, true);
      if (why) leftOut.push({ ip, why });
      else ips.push(ip);
    }
    const closed = judged.length > 0 && ips.length === 0;
    // The loopback that "node" adds keeps localhost:hostPort working as with portmap; it is not a pod's
    // choice, so allowedHostCIDRs does not apply to it.
    if (source.kind === "node" && judged.includes(LOCALHOST.family)) {
      const why = refusal(LOCALHOST, policy, network, false);
      if (why) leftOut.push({ ip: LOCALHOST, why });
      else ips.push(LOCALHOST);
    }
    return closed
      ? { mapping, source: source.kind, ips, leftOut, closed, reason: closedReason(source.kind, leftOut, judged) }
      : { mapping, source: source.kind, ips, leftOut, closed };
  });
}

/**
 * Why the default left a mapping closed, for status and the keeper: it named no address in the families the
 * pod gets rules in (`families`), or what it named was left out, each address with its reason.
 */
function closedReason(
  source: "node" | "defaultHostIP",
  leftOut: readonly LeftOut[],
  families: readonly Family[],
): string {
  const what = source === "node" ? 'defaultHostIP "node"' : "defaultHostIP";
  const outside = leftOut.filter((l) => l.ip.text !== LOCALHOST.text);
  if (outside.length === 0)
    return `${what} ${source === "node" ? "found no node address" : "names no address"} of the pod's families (${familiesText(families)})`;
  return `${what} left no address of this node: ${outside.map((l) => `${l.ip.text} (${l.why})`).join(", ")}`;
}

/** The stderr lines for what the default left out and the mappings it left closed, each said once. */
export function resolutionNotes(resolved: readonly ResolvedMapping[], pod: string): string[] {
  const notes = new Set<string>();
  for (const r of resolved) {
    const what = r.source === "node" ? 'defaultHostIP "node"' : "defaultHostIP";
    for (const { ip, why } of r.leftOut) notes.add(`pod ${pod}: ${what} leaves out ${ip.text}: ${why}`);
    if (r.closed) {
      const only = r.ips?.map((ip) => ip.text).join(", ");
      notes.add(
        `warning: pod ${pod}: ${describe(r.mapping)}: ${what} left no address of this node: it answers ${only ? `only on ${only}` : "on no address"} until the policy allows one`,
      );
    }
  }
  return [...notes];
}

/** What the rule rewrite needs for one mapping in one family. */
export interface FamilyScope {
  mapping: PortMapping;
  protocol: PortMapping["protocol"];
  hostPort: number;
  containerPort: number;
  /** Host IPs of this family; empty: the mapping gets no rules in this family; undefined: as portmap wrote it. */
  ips: Ip[] | undefined;
  /** With `ips` undefined: the runtime's specific hostIP, which portmap wrote as the destination; else none. */
  hostIp: Ip | undefined;
}

const hostIpField = (m: PortMapping) => m.hostIp?.text ?? "";

/**
 * Every mapping portmap wrote rules for in this family, in portmap's order (the runtime's). Two mappings with
 * the same protocol, port and hostIP (Kubernetes' own key for a hostPort) are refused; the same port with
 * different hostIPs (a specific one and none, `0.0.0.0` and none, none and an IPv6 one) is kept, in order.
 */
export function scopesForFamily(resolved: readonly ResolvedMapping[], family: Family): FamilyScope[] {
  const inFamily = resolved.filter((r) => mappingFamilies(r.mapping).includes(family));
  return inFamily.map((r, i) => {
    const m = r.mapping;
    const twin = inFamily
      .slice(0, i)
      .some(
        (o) =>
          o.mapping.protocol === m.protocol &&
          o.mapping.hostPort === m.hostPort &&
          hostIpField(o.mapping) === hostIpField(m),
      );
    if (twin) {
      throw new CniError(
        Code.InvalidConfig,
        `invalid network configuration: runtimeConfig.portMappings has ${describe(m)} with hostIP ${JSON.stringify(hostIpField(m))} more than once`,
      );
    }
    const ips = r.ips?.filter((ip) => ip.family === family);
    return {
      mapping: m,
      protocol: m.protocol,
      hostPort: m.hostPort,
      containerPort: m.containerPort,
      ips,
      hostIp: r.source === "runtime" ? m.hostIp : undefined,
    };
  });
}

/**
 * The mappings of one family that can never receive traffic there: first match wins, and mappings before them
 * on the same protocol and port take every address they have. Each with the first of those.
 */
export interface Shadowed {
  scope: FamilyScope;
  /** The first earlier mapping on the same port that takes some of its addresses. */
  by: FamilyScope;
}

export function shadowedScopes(scopes: readonly FamilyScope[]): Shadowed[] {
  const shadowed: Shadowed[] = [];
  scopes.forEach((s, i) => {
    const destinations = s.ips ? s.ips.map((ip) => ip.text) : s.hostIp ? [s.hostIp.text] : undefined;
    if (destinations?.length === 0) return;
    const before = scopes.slice(0, i).filter((o) => o.protocol === s.protocol && o.hostPort === s.hostPort);
    const claims = (o: FamilyScope, d: string | undefined) => {
      const theirs = o.ips ? o.ips.map((ip) => ip.text) : o.hostIp ? [o.hostIp.text] : undefined;
      return theirs === undefined || (d !== undefined && theirs.includes(d));
    };
    const covered = (destinations ?? [undefined]).every((d) => before.some((o) => claims(o, d)));
    const by = before.find((o) => (destinations ?? [undefined]).some((d) => claims(o, d)));
    if (covered && by) shadowed.push({ scope: s, by });
  });
  return shadowed;
}
