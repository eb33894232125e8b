// `portmap-hostip reconcile`: rebuild, from libcni's result cache, the hostPort rules of every attachment
// whose chain is missing or wrong (after a firewall reload or a flush), and the shared chains portmap needs,
// in one iptables-restore transaction per family. Correct chains are not touched. The pass itself: keep.ts.

import type { Family } from "../core/ip.js";
import { type Rule, ruleKey, sameRule, sameRules } from "../core/rule.js";
import { portmapSharedRules } from "../iptables/portmap.js";
import { type NatTable, portmapJumps, printedLine, rulesOf } from "../iptables/table.js";
import { formatRule } from "../iptables/text.js";
import type { ExpectedChain } from "./attachment.js";

export interface Wanted {
  label: string;
  /** The container's record key (host/state.ts). */
  key: string;
  expected: ExpectedChain;
}

export interface Rebuilt extends Wanted {
  /** The chain's rules before (empty when it was missing). */
  before: Rule[];
}

export interface FamilyPlan {
  family: Family;
  /** iptables-restore --noflush lines: declarations first, then rule commands. Empty: nothing to do. */
  lines: string[];
  declarations: string[];
  commands: string[];
  actions: string[];
  rebuilt: Rebuilt[];
  correct: string[];
  skipped: string[];
  /** Wanted chains that need a rebuild which `mayRebuild` refused for now (labels). */
  waiting: string[];
}

// Expected rules live across passes (the keeper memoizes them): each is formatted once.
const formatted = new WeakMap<Rule, string>();
const formatOnce = (rule: Rule): string => {
  const known = formatted.get(rule);
  if (known !== undefined) return known;
  const line = formatRule(rule);
  formatted.set(rule, line);
  return line;
};

/** The fast path of sameRules for rules read by parseTable: the lines iptables printed are the ones we would write. */
function samePrinted(current: readonly Rule[], expected: readonly Rule[]): boolean {
  return (
    current.length === expected.length && current.every((r, i) => printedLine(r) === formatOnce(expected[i] as Rule))
  );
}

/** Pure: what to write so that every wanted chain, its jumps and portmap's shared rules are as they must be. */
export function planReconcile(
  table: NatTable,
  family: Family,
  wanted: readonly Wanted[],
  mayRebuild: (w: Wanted) => boolean = () => true,
): FamilyPlan {
  const plan: FamilyPlan = {
    family,
    lines: [],
    declarations: [],
    commands: [],
    actions: [],
    rebuilt: [],
    correct: [],
    skipped: [],
    waiting: [],
  };
  const declared = new Set(table.chains);
  const declarations: string[] = [];
  const commands: string[] = [];
  const added = new Set<string>();
  const ensureChain = (chain: string) => {
    if (declared.has(chain)) return;
    declared.add(chain);
    declarations.push(`:${chain} - [0:0]`);
    plan.actions.push(`created chain ${chain}`);
  };
  // Keys computed once per pass: at 1,000 pods the comparisons dominate a pass that changes nothing.
  const jumpsByChain = new Map<string, Rule[]>();
  for (const j of portmapJumps(table)) jumpsByChain.set(j.chain, [...(jumpsByChain.get(j.chain) ?? []), j.rule]);
  const presentKeys = new Map<string, Set<string>>();
  const present = (chain: string): Set<string> => {
    const known = presentKeys.get(chain);
    if (known) return known;
    const keys = new Set(rulesOf(table, chain).map(ruleKey));
    presentKeys.set(chain, keys);
    return keys;
  };

  for (const w of wanted) {
    const e = w.expected;
    const mark = e.options.externalSetMarkChain;
    if (mark !== undefined && !declared.has(mark)) {
      plan.skipped.push(`${w.label}: its externalSetMarkChain ${mark} does not exist (not portmap's to create)`);
      continue;
    }
    // portmap sets up the shared chains before the pod's own: so do we, once per distinct rule.
    const shared = portmapSharedRules(e.options);
    shared.chains.forEach(ensureChain);
    for (const s of shared.rules) {
      const key = ruleKey(s.rule);
      if (present(s.rule.chain).has(key) || added.has(key)) continue;
      added.add(key);
      commands.push(formatRule(s.rule, s.first ? "-I" : "-A"));
      plan.actions.push(`added ${formatRule(s.rule)}`);
    }
    const exists = table.chains.has(e.chain);
    const before = exists ? rulesOf(table, e.chain) : [];
    const currentJumps = jumpsByChain.get(e.chain) ?? [];
    const chainOk = exists && (samePrinted(before, e.rules) || sameRules(before, e.rules));
    const has = (rules: readonly Rule[], rule: Rule) => rules.some((r) => sameRule(r, rule));
    const jumpsOk = currentJumps.length === e.jumps.length && e.jumps.every((j) => has(currentJumps, j));
    if (chainOk && jumpsOk) {
      plan.correct.push(w.label);
      continue;
    }
    if (!mayRebuild(w)) {
      plan.waiting.push(w.label);
      continue;
    }
    if (!chainOk) {
      // Declaring an existing chain in a --noflush transaction flushes it: rewritten atomically.
      declarations.push(`:${e.chain} - [0:0]`);
      declared.add(e.chain);
      commands.push(...e.rules.map((r) => formatRule(r)));
    }
    commands.push(...currentJumps.filter((j) => !has(e.jumps, j)).map((j) => formatRule(j, "-D")));
    commands.push(...e.jumps.filter((j) => !has(currentJumps, j)).map((j) => formatRule(j)));
    plan.rebuilt.push({ ...w, before });
    const what = chainOk ? "kept" : exists ? `rewrote (${e.rules.length} rules)` : `created (${e.rules.length} rules)`;
    plan.actions.push(
      `${w.label}: ${what} ${e.chain}${jumpsOk ? "" : `, jumps ${currentJumps.length} → ${e.jumps.length}`}`,
    );
  }
  plan.declarations = declarations;
  plan.commands = commands;
  plan.lines = [...declarations, ...commands];
  return plan;
}
