// What one cached attachment's rules must be: portmap's rules rebuilt from the cached conflist, capability
// arguments and result, then scoped by our entry's policy exactly as ADD scopes them.
import { type NetConf, type PortMapping, parseNetConf } from "../core/config.js";
import type { Family } from "../core/ip.js";
import { PLUGIN_TYPE } from "../core/names.js";
import type { NodeNetwork } from "../core/node.js";
import { podAddresses, podFamilies } from "../core/result.js";
import type { Rule } from "../core/rule.js";
import { attachmentLabel, type CachedAttachment } from "../host/cache.js";
import { portmapChainName } from "../iptables/chain-name.js";
import {
  dnatTo,
  type PodNet,
  type PortmapOptions,
  parsePortmapOptions,
  podNet,
  portmapChainRules,
  portmapJumpRules,
} from "../iptables/portmap.js";
import { podScoping, resolvePod, scopeFamily } from "../pipeline/pod.js";
import { familiesText, mappingFamilies, type ResolvedMapping } from "../policy/resolve.js";

const PORTMAP_TYPE = "portmap";

export interface ExpectedChain {
  family: Family;
  chain: string;
  pod: PodNet;
  /** portmap's rules as portmap wrote them. */
  portmap: Rule[];
  /** The chain as it must be: portmap's rules scoped by our policy (= portmap's when we are not in the list). */
  rules: Rule[];
  jumps: Rule[];
  options: PortmapOptions;
}

export type PortmapBackend = "iptables" | "nftables";

/**
 * Which rules portmap wrote for this attachment: its entry's `backend` (portmap ≥ 1.5); iptables when it
 * names none (every portmap before 1.5, and the default after).
 */
export function portmapBackendOf(a: CachedAttachment): PortmapBackend {
  return a.plugins.find((p) => p.type === PORTMAP_TYPE)?.["backend"] === "nftables" ? "nftables" : "iptables";
}

/** The stdin libcni gives one entry of the list: the entry, the list's name and version, its capabilities. */
export function entryConf(a: CachedAttachment, entry: Record<string, unknown>): unknown {
  const capabilities = (entry["capabilities"] ?? {}) as Record<string, unknown>;
  const runtimeConfig = Object.fromEntries(
    Object.entries(a.capabilityArgs).filter(([cap]) => capabilities[cap] === true),
  );
  return { ...entry, name: a.network, cniVersion: a.cniVersion, prevResult: a.result, runtimeConfig };
}

/** "tcp/8080" for each hostPort the runtime asked for (the cached capability arguments, as portmap reads them). */
function mappedPorts(a: CachedAttachment): string[] {
  const entry = a.plugins.find((p) => p.type === PORTMAP_TYPE);
  try {
    return entry ? parseNetConf(entryConf(a, entry)).portMappings.map((m) => `${m.protocol}/${m.hostPort}`) : [];
  } catch {
    return []; // mappings portmap itself refuses take no port
  }
}

/**
 * The hostPorts of every live attachment, of any network and either backend: a dead pod's rules on one of them
 * take a live pod's traffic, whichever backend each is in (the nat table's and portmap's nftables hooks both
 * see every packet, and the first DNAT wins).
 */
export function livePorts(
  attachments: readonly CachedAttachment[],
  isLive: (a: CachedAttachment) => boolean,
): Set<string> {
  return new Set(attachments.filter(isLive).flatMap(mappedPorts));
}

/** Whether the attachment's cached conflist has our entry. */
export const hasOurEntry = (a: CachedAttachment): boolean => a.plugins.some((p) => p.type === PLUGIN_TYPE);

/**
 * The entry of our plugin, parsed as ADD parses it; undefined when the list does not have us and no
 * `fallback` entry (the keeper's own, for pods that started while our entry was missing) is given.
 */
export function ourConf(a: CachedAttachment, fallback?: Record<string, unknown>): NetConf | undefined {
  const ours = a.plugins.find((p) => p.type === PLUGIN_TYPE) ?? fallback;
  return ours && parseNetConf(entryConf(a, ours));
}

/** The attachment's portmap entry, and the configuration portmap's ADD read from it; undefined without portmap. */
function portmapOf(a: CachedAttachment): { entry: Record<string, unknown>; conf: NetConf } | undefined {
  const entry = a.plugins.find((p) => p.type === PORTMAP_TYPE);
  return entry && { entry, conf: parseNetConf(entryConf(a, entry)) };
}

/**
 * Per family where portmap wrote rules for this attachment, the chain they must form now. Throws an Error
 * (CniError for policy refusals) saying why they cannot be computed.
 */
export function expectedChains(
  a: CachedAttachment,
  network: NodeNetwork,
  fallback?: Record<string, unknown>,
): ExpectedChain[] {
  const portmap = portmapOf(a);
  if (!portmap || portmap.conf.portMappings.length === 0) return [];
  const { entry, conf } = portmap;
  const options = parsePortmapOptions(entry);
  const chain = portmapChainName(a.network, a.containerId);
  const ours = ourConf(a, fallback);
  const addresses = podAddresses(conf.prevResult, a.ifname);
  const scoping = ours && podScoping(ours, attachmentLabel(a), podFamilies(ours.prevResult, a.ifname));
  const resolved = scoping && resolvePod(scoping, network);
  return [...addresses].flatMap(([family, address]) => {
    const pod = podNet(address);
    if (!pod) return [];
    const portmap = portmapChainRules(chain, pod, conf.portMappings, options);
    const scoped = resolved ? scopeFamily(resolved, family, portmap) : { rules: portmap, missing: [] };
    const missing = scoped.missing[0];
    if (missing)
      throw new Error(`hostPort ${missing.hostPort}/${missing.protocol} has no portmap rule to scope in IPv${family}`);
    const jumps = portmapJumpRules(a.network, a.containerId, chain, family, conf.portMappings, options);
    return [{ family, chain, pod, portmap, rules: scoped.rules, jumps, options }];
  });
}

/** A hostPort mapping of a cached attachment as portmap wrote it, and why it would answer on no address. */
export interface CachedMapping {
  mapping: PortMapping;
  /** Per family where portmap wrote its rules (the pod has an address there): the DNAT target, `ip:port`. */
  targets: Array<{ family: Family; target: string }>;
  /**
   * Why it answers on no address when its rules match none: the policy's default left it none, the pod's own
   * choice is refused now, the runtime's hostIP is of a family the pod lacks; undefined: the policy gives it
   * addresses (its rules are missing or older than the node's addresses).
   */
  closedBy: string | undefined;
}

/** Every hostPort mapping of the attachment's portmap entry; none without one. Throws an Error for a bad entry. */
export function cachedMappings(
  a: CachedAttachment,
  network: NodeNetwork,
  fallback?: Record<string, unknown>,
): CachedMapping[] {
  const conf = portmapOf(a)?.conf;
  if (!conf) return [];
  const pods = new Map(
    [...podAddresses(conf.prevResult, a.ifname).values()]
      .flatMap((address) => podNet(address) ?? [])
      .map((p) => [p.family, p]),
  );
  const ours = ourConf(a, fallback);
  let resolved: ResolvedMapping[] | undefined;
  let refused: string | undefined;
  try {
    const scoping = ours && podScoping(ours, attachmentLabel(a), new Set(pods.keys()));
    resolved = scoping && resolvePod(scoping, network);
  } catch (err) {
    refused = (err as Error).message;
  }
  return conf.portMappings.map((mapping, i) => {
    const families = mappingFamilies(mapping).filter((f) => pods.has(f));
    const r = resolved?.length === conf.portMappings.length ? resolved[i] : undefined;
    const otherFamily =
      families.length === 0 && mapping.hostIp
        ? `hostIP ${mapping.hostIp.text} (from the runtime) is IPv${mapping.hostIp.family}: the pod has only ${familiesText([...pods.keys()])} addresses`
        : undefined;
    return {
      mapping,
      targets: families.map((family) => ({
        family,
        target: dnatTo(pods.get(family) as PodNet, mapping.containerPort),
      })),
      closedBy: refused ?? otherFamily ?? r?.reason,
    };
  });
}
