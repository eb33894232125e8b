// The scoping pipeline, pure: a pod's configuration (mappings, policy, annotation) and the node's network resolve
// to host IPs per mapping, which turn the chain's current rules into the chain as it must be. ADD and CHECK run
// it on the rules portmap just wrote; reconcile on the rules portmap would write.
import type { NetConf } from "../core/config.js";
import type { Family } from "../core/ip.js";
import type { NodeNetwork } from "../core/node.js";
import type { Rule } from "../core/rule.js";
import { type HostIpAnnotation, parseAnnotation } from "../policy/annotation.js";
import {
  type FamilyScope,
  hostIpSource,
  mappingFamilies,
  type ResolvedMapping,
  resolveMappings,
  type Shadowed,
  scopesForFamily,
  shadowedScopes,
} from "../policy/resolve.js";
import { type ScopedChain, scopeChain } from "./scope.js";

export interface PodScoping {
  conf: NetConf;
  /** How messages name the pod. */
  pod: string;
  annotation: HostIpAnnotation | undefined;
  /** Families where the pod has an address and some mapping is not scoped by the runtime itself. */
  families: Family[];
  /** Families where the pod has an address: the only ones whose host IPs are judged. */
  podFamilies: ReadonlySet<Family>;
}

/**
 * The first step, before anything is read from the node: parses the annotation (code 101) and says which
 * families' chains may change. Undefined when no mapping is to be scoped at all (every one resolves to "any").
 */
export function podScoping(conf: NetConf, pod: string, podFamilies: ReadonlySet<Family>): PodScoping | undefined {
  const annotation =
    conf.annotationValue === undefined ? undefined : parseAnnotation(conf.annotationValue, conf.policy.annotation, pod);
  const sources = conf.portMappings.map((m) => hostIpSource(m, conf.policy, annotation));
  if (sources.every((s) => s.kind === "any")) return undefined;
  const families = ([4, 6] as const).filter(
    (f) =>
      podFamilies.has(f) &&
      conf.portMappings.some((m, i) => sources[i]?.kind !== "runtime" && mappingFamilies(m).includes(f)),
  );
  return { conf, pod, annotation, families, podFamilies };
}

/** Host IPs per mapping on this node; a CniError (100) for the first IP the pod asked for and may not have. */
export function resolvePod(s: PodScoping, network: NodeNetwork): ResolvedMapping[] {
  return resolveMappings(s.conf.portMappings, s.conf.policy, s.annotation, network, s.pod, s.podFamilies);
}

export interface ScopedFamily extends ScopedChain {
  family: Family;
  /** Mappings left with no host IP in this family (all of the other one, or the default found none): no rules. */
  closed: FamilyScope[];
  /** Every mapping portmap wrote in this family, in its order. */
  scopes: FamilyScope[];
}

/**
 * One family's chain as it must be, from its current rules. A mapping left without host IPs in the family
 * loses its rules there; with `never` (an address no packet has) it keeps them with that destination instead.
 */
export function scopeFamily(
  resolved: readonly ResolvedMapping[],
  family: Family,
  current: readonly Rule[],
  never?: string,
): ScopedFamily {
  const scopes = scopesForFamily(resolved, family);
  const closed = scopes.filter((s) => s.ips?.length === 0);
  const kept: FamilyScope[] = never === undefined ? [] : closed.map((s) => ({ ...s, ips: [{ family, text: never }] }));
  const scoped = scopeChain(
    current,
    scopes.map((s) => kept[closed.indexOf(s)] ?? s),
  );
  return { family, rules: scoped.rules, missing: scoped.missing.filter((s) => !kept.includes(s)), closed, scopes };
}

const describeMapping = (s: FamilyScope) =>
  `hostPort ${s.hostPort}/${s.protocol} → container port ${s.containerPort} (hostIP ${JSON.stringify(s.mapping.hostIp?.text ?? "")})`;

/**
 * Warnings for the mappings that can never receive traffic: shadowed in every family where they have rules.
 * Kubernetes accepts them (its key is protocol, hostIP and port); portmap alone would not deliver to them either.
 */
export function neverReceiving(families: readonly ScopedFamily[], pod: string): string[] {
  const alive = new Set<FamilyScope["mapping"]>();
  const dead = new Map<FamilyScope["mapping"], Shadowed>();
  for (const f of families) {
    const shadowed = new Map(shadowedScopes(f.scopes).map((x) => [x.scope.mapping, x]));
    // A mapping closed in a family (no host IP there) neither receives nor is shadowed there.
    for (const s of f.scopes.filter((s) => s.ips?.length !== 0)) {
      const x = shadowed.get(s.mapping);
      if (!x) alive.add(s.mapping);
      else if (!dead.has(s.mapping)) dead.set(s.mapping, x);
    }
  }
  return [...dead]
    .filter(([mapping]) => !alive.has(mapping))
    .map(
      ([, x]) =>
        `warning: pod ${pod}: ${describeMapping(x.scope)} can never receive traffic: ${describeMapping(x.by)} comes before it in portmap's order and takes every address it has`,
    );
}
