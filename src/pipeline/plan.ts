// The plan of a pod's rules, pure: the node's network and the rules as read, per family, in; the rules as they
// must be out (backends/scope-pod.ts reads and writes them in whichever place portmap wrote them).
import { CniError, Code } from "../core/errors.js";
import type { Family } from "../core/ip.js";
import type { NodeNetwork } from "../core/node.js";
import { type Rule, sameRules } from "../core/rule.js";
import { type FamilyScope, type ResolvedMapping, resolutionNotes } from "../policy/resolve.js";
import { neverReceiving, type PodScoping, resolvePod, scopeFamily } from "./pod.js";

/** One family's rules of a pod: as read, and as they must be. */
export interface FamilyPlan {
  family: Family;
  current: Rule[];
  desired: Rule[];
  /** Mappings left with no host IP in this family. */
  closed: FamilyScope[];
}

/** What ADD and CHECK work from: the host IPs decided, the plan per family, and what to say on stderr. */
export interface PodPlan<P extends FamilyPlan = FamilyPlan> {
  /** Every mapping with the host IPs decided for it (for the log file). */
  resolved: ResolvedMapping[];
  /** Per family whose rules may need scoping. */
  plans: P[];
  /** What the default left out, and mappings it left closed: for stderr. */
  notes: string[];
}

/** Where the rules are, as the plan needs to know it. */
export interface PlanTarget {
  /** A destination no packet has for a closed mapping whose rules must stay; undefined: they go. */
  closedDestination: Readonly<Record<Family, string>> | undefined;
  /** Where a family's rules were looked for, for the error when one is missing. */
  where(family: Family): string;
}

/** Pure: the plan from the node's network and the pod's rules as read, per family of `scoping`. */
export function planScoped(
  scoping: PodScoping,
  pod: string,
  network: NodeNetwork,
  current: readonly Rule[][],
  target: PlanTarget,
): PodPlan {
  const resolved = resolvePod(scoping, network);
  const scoped = scoping.families.map((family, i) =>
    scopeFamily(resolved, family, current[i] as Rule[], target.closedDestination?.[family]),
  );
  const plans = scoped.map(({ family, rules, missing, closed }, i): FamilyPlan => {
    const first = missing[0];
    if (first) {
      const what = `no portmap rule for hostPort ${first.hostPort}/${first.protocol} of pod ${pod} in ${target.where(family)}`;
      // Rules of the pod's other hostPorts there: portmap ran. Measured: ip6tables-legacy 1.8.9's `-C` finds a rule
      // of another port of the same protocol, and portmap appends only what `-C` does not find.
      const why = (current[i] as Rule[]).length
        ? "the pod's other hostPorts have their rules there: portmap skips a rule its `iptables -C` reports present, as ip6tables-legacy 1.8.9 does for a rule of another port of the same protocol; nothing was changed"
        : "portmap-hostip must come after portmap in the plugin list";
      throw new CniError(Code.PortmapRulesMissing, `${what}: ${why}`);
    }
    return { family, current: current[i] as Rule[], desired: rules, closed };
  });
  return { resolved, plans, notes: [...resolutionNotes(resolved, pod), ...neverReceiving(scoped, pod)] };
}

export const changed = (plan: { current: readonly Rule[]; desired: readonly Rule[] }): boolean =>
  !sameRules(plan.current, plan.desired);
