// The scoping pipeline, pure: a pod's configuration (mappings, policy, annotation) and the node's network resolve
// to host IPs per mapping, which turn the chain's current rules into the chain as it must be. ADD and CHECK run
// it on the rules portmap just wrote; reconcile on the rules portmap would write.
import type { NetConf } from "../core/config.js";
import type { Family } from "../core/ip.js";
import type { NodeNetwork } from "../core/node.js";
import type { Rule } from "../core/rule.js";
import { type HostIpAnnotation, parseAnnotation } from "../policy/annotation.js";
import { type FamilyScope, type ResolvedMapping, hostIpSource, mappingFamilies, resolveMappings, scopesForFamily } from "../policy/resolve.js";
import { type ScopedChain, scopeChain } from "./scope.js";

export interface PodScoping {
  conf: NetConf;
  /** How messages name the pod. */
  pod: string;
  annotation: HostIpAnnotation | undefined;
  /** Families where the pod has an address and some mapping is not scoped by the runtime itself. */
  families: Family[];
}

/**
 * The first step, before anything is read from the node: parses the annotation (code 101) and says which
 * families' chains may change. Undefined when no mapping is to be scoped at all (every one resolves to "any").
 */
export function podScoping(conf: NetConf, pod: string, podFamilies: ReadonlySet<Family>): PodScoping | undefined {
  const annotation = conf.annotationValue === undefined ? undefined : parseAnnotation(conf.annotationValue, conf.policy.annotation, pod);
  const sources = conf.portMappings.map((m) => hostIpSource(m, conf.policy, annotation));
  if (sources.every((s) => s.kind === "any")) return undefined;
  const families = ([4, 6] as const).filter(
    (f) => podFamilies.has(f) && conf.portMappings.some((m, i) => sources[i]?.kind !== "runtime" && mappingFamilies(m).includes(f)),
  );
  return { conf, pod, annotation, families };
}

/** Host IPs per mapping on this node; a CniError (100, 104) for the first IP the pod may not have. */
export function resolvePod(s: PodScoping, network: NodeNetwork): ResolvedMapping[] {
  return resolveMappings(s.conf.portMappings, s.conf.policy, s.annotation, network, s.pod);
}

export interface ScopedFamily extends ScopedChain {
  family: Family;
  /** Mappings whose host IPs are all of the other family: they get no rules in this one. */
  closed: FamilyScope[];
}

/**
 * One family's chain as it must be, from its current rules. A mapping left without host IPs in the family
 * loses its rules there; with `never` (an address no packet has) it keeps them with that destination instead.
 */
export function scopeFamily(resolved: readonly ResolvedMapping[], family: Family, current: readonly Rule[], never?: string): ScopedFamily {
  const scopes = scopesForFamily(resolved, family);
  const closed = scopes.filter((s) => s.ips.length === 0);
  const kept = never === undefined ? [] : closed.map((s) => ({ ...s, ips: [{ family, text: never }] }));
  const scoped = scopeChain(current, scopes.map((s) => kept[closed.indexOf(s)] ?? s));
  return { family, rules: scoped.rules, missing: scoped.missing.filter((s) => !kept.includes(s)), closed };
}
