// The rewrite that scopes a mapping's rules to host IPs, on the rule model: the same for every backend.
import type { Ip } from "../core/ip.js";
import { destinationOf, dnatOf, dportOf, protocolOf, type Rule, ruleKey, withDestination } from "../core/rule.js";
import type { FamilyScope } from "../policy/resolve.js";

/** One mapping's rules as portmap writes them: its marks, then its DNAT, all for one port and destination. */
interface Block {
  group: string;
  /** Which mappings of its port it can be: the DNAT's container port. */
  key: string;
  rules: Rule[];
}

const groupOf = (protocol: string | undefined, port: number | undefined) => `${protocol}/${port}`;
const keyOf = (group: string, containerPort: string) => `${group}>${containerPort}`;
/** `10.244.1.5:80`, `[fd00::5]:80` → "80". */
const containerPortOf = (to: string) => to.slice(to.lastIndexOf(":") + 1);
const scopeGroup = (s: FamilyScope) => groupOf(s.protocol, s.hostPort);
const scopeKey = (s: FamilyScope) => keyOf(scopeGroup(s), String(s.containerPort));

/**
 * Splits a chain into mapping blocks and other rules. A block ends with a DNAT rule and takes the rules right
 * before it that match the same protocol, port and destination (portmap's marks for that mapping).
 */
function split(rules: readonly Rule[]): Array<Block | Rule> {
  const units: Array<Block | Rule> = [];
  for (const rule of rules) {
    const to = dnatOf(rule);
    if (to === undefined || rule.destination?.negated) {
      units.push(rule);
      continue;
    }
    const group = groupOf(protocolOf(rule), dportOf(rule));
    const destination = destinationOf(rule);
    const block: Block = { group, key: keyOf(group, containerPortOf(to)), rules: [rule] };
    for (let last = units.at(-1); last && !("group" in last); last = units.at(-1)) {
      if (
        groupOf(protocolOf(last), dportOf(last)) !== group ||
        last.destination?.negated ||
        destinationOf(last) !== destination
      )
        break;
      block.rules.unshift(units.pop() as Rule);
    }
    units.push(block);
  }
  return units;
}

export interface ScopedChain {
  rules: Rule[];
  /** Scopes with host IPs whose mapping has no rule in the chain. */
  missing: FamilyScope[];
}

/**
 * Rewrites one chain from the scopes of every mapping portmap wrote in this family, in portmap's order. The
 * mappings of one protocol and port are written together, in portmap's order, at the place of that port's
 * first rule: first match wins, so within the addresses each one keeps, traffic goes where portmap alone sends
 * it. Each mapping's rules are portmap's for it as written (so its options are kept): the port's marks, then
 * its DNAT, repeated with the destination set to each of its host IPs, or as portmap wrote them (`ips`
 * undefined). A rule equal to one already written is left out, as portmap itself does (it appends a rule only
 * when that exact rule is missing). Every other rule stays as it is, where it is. Applying the rewrite to its
 * own output, or to it plus portmap's re-appended rules, gives the same chain.
 */
export function scopeChain(rules: readonly Rule[], scopes: readonly FamilyScope[]): ScopedChain {
  const keys = new Set(scopes.map(scopeKey));
  // Per port, the marks of its fullest block (the same for every mapping of a port: they name no container
  // port, and a block may have lost them as duplicates); per mapping, its DNAT.
  const marks = new Map<string, Rule[]>();
  const dnats = new Map<string, Rule>();
  const out: Array<Rule | string> = [];
  for (const unit of split(rules)) {
    if (!("group" in unit) || !keys.has(unit.key)) {
      out.push(...("group" in unit ? unit.rules : [unit]));
      continue;
    }
    if (!out.includes(unit.group)) out.push(unit.group);
    const bare = unit.rules.map((r) => withDestination(r, undefined));
    if (bare.length - 1 > (marks.get(unit.group)?.length ?? -1)) marks.set(unit.group, bare.slice(0, -1));
    if (!dnats.has(unit.key)) dnats.set(unit.key, bare.at(-1) as Rule);
  }
  const seen = new Set<string>();
  const other = (rule: Rule): Rule => {
    seen.add(ruleKey(rule));
    return rule;
  };
  const once = (rule: Rule): Rule[] => {
    const key = ruleKey(rule);
    if (seen.has(key)) return [];
    seen.add(key);
    return [rule];
  };
  const written = (s: FamilyScope): Rule[] => {
    const dnat = dnats.get(scopeKey(s));
    if (!dnat) return [];
    const template = [...(marks.get(scopeGroup(s)) ?? []), dnat];
    const destinations: Array<Ip | undefined> = s.ips ?? [s.hostIp];
    return destinations.flatMap((ip) => template.flatMap((rule) => once(withDestination(rule, ip?.text))));
  };
  return {
    rules: out.flatMap((slot) =>
      typeof slot === "string" ? scopes.filter((s) => scopeGroup(s) === slot).flatMap(written) : [other(slot)],
    ),
    missing: scopes.filter((s) => s.ips !== undefined && s.ips.length > 0 && !dnats.has(scopeKey(s))),
  };
}
