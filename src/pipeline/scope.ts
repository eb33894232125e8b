// The rewrite that scopes a mapping's rules to host IPs, on the rule model: the same for every backend.
import type { Ip } from "../core/ip.js";
import { type Rule, dportOf, protocolOf, ruleKey, withDestination } from "../core/rule.js";
import type { FamilyScope } from "../policy/resolve.js";

function belongsTo(rule: Rule, scope: FamilyScope, foreign: ReadonlySet<string>): boolean {
  if (protocolOf(rule) !== scope.protocol || dportOf(rule) !== scope.hostPort) return false;
  const d = rule.destination;
  return d === undefined || (!d.negated && !foreign.has(d.address));
}

export interface ScopedChain {
  rules: Rule[];
  /** Scopes with host IPs whose mapping has no rule in the chain. */
  missing: FamilyScope[];
}

/**
 * Rewrites one chain. Each scope's rules, without their destination, are its template (portmap's rule set for
 * that mapping, in portmap's order, each rule once); the template is repeated with the destination set to
 * every host IP, at the place of the mapping's first rule. Every other rule stays as it is, where it is.
 * Applying the rewrite to its own output, or to it plus portmap's re-appended rules, gives the same chain.
 */
export function scopeChain(rules: readonly Rule[], scopes: readonly FamilyScope[]): ScopedChain {
  const foreign = scopes.map((s) => new Set(s.foreign.map((ip) => ip.text)));
  const templates = scopes.map(() => new Map<string, Rule>());
  const slots: Array<Rule | number> = [];
  for (const rule of rules) {
    const owner = scopes.findIndex((scope, i) => belongsTo(rule, scope, foreign[i] as Set<string>));
    if (owner < 0) {
      slots.push(rule);
      continue;
    }
    const template = templates[owner] as Map<string, Rule>;
    if (template.size === 0) slots.push(owner);
    const unscoped = withDestination(rule, undefined);
    template.set(ruleKey(unscoped), unscoped);
  }
  const out = slots.flatMap((slot) => {
    if (typeof slot !== "number") return [slot];
    const template = [...(templates[slot] as Map<string, Rule>).values()];
    return (scopes[slot] as FamilyScope).ips.flatMap((ip: Ip) => template.map((rule) => withDestination(rule, ip.text)));
  });
  return { rules: out, missing: scopes.filter((s, i) => s.ips.length > 0 && templates[i]?.size === 0) };
}
