// The iptables backend's plans, pure (a nat table as read in, restore lines out): every live pod's chain, its
// jumps and portmap's shared rules as they must be (planReconcile); dead pods' chains and jumps gone (planGc,
// and planDead: which dead chains go in a keeper pass). Correct chains are not touched.
import type { Family } from "../core/ip.js";
import { type Rule, ruleKey, sameRule, sameRules, takenPorts } from "../core/rule.js";
import type { Liveness, Verdict } from "../host/liveness.js";
import { mayGo } from "../host/liveness.js";
import { recordKey } from "../host/record.js";
import { portmapSharedRules } from "../iptables/portmap.js";
import { DNAT_CHAIN, foreignReferences, type NatTable, portmapJumps, printedLine, rulesOf } from "../iptables/table.js";
import { formatRule } from "../iptables/text.js";
import type { ExpectedChain } from "../pipeline/attachment.js";
import type { BackendPass, Removed } from "./backend.js";

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
  mayRebuild: (w: Wanted, alone: boolean) => boolean = () => true,
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
  // A chain absent when read is created with -N, not declared: if something made it since (a restored table), the
  // transaction fails whole and the next pass reads again, where a declaration would flush what is in it now.
  const ensureChain = (chain: string) => {
    if (declared.has(chain)) return;
    declared.add(chain);
    declarations.push(`-N ${chain}`);
    plan.actions.push(`created chain ${chain}`);
  };
  const entered = rulesOf(table, "PREROUTING").some((r) => r.target.kind === "jump" && r.target.chain === DNAT_CHAIN);
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
    // Its chain or jumps gone while portmap's top-level jumps remain: what portmap's DEL does (a flush takes those).
    if (!mayRebuild(w, (!exists || currentJumps.length === 0) && entered)) {
      plan.waiting.push(w.label);
      continue;
    }
    if (!chainOk) {
      // Flushed and rewritten in the transaction; gone since the read (portmap's DEL), the transaction fails
      // whole, where a declaration would create it again.
      declarations.push(exists ? `-F ${e.chain}` : `-N ${e.chain}`);
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

export interface Orphan {
  chain: string;
  network: string;
  containerId: string;
  jumps: Rule[];
}

export interface GcPlan {
  family: Family;
  orphans: Orphan[];
  /** Orphans left alone, and why. */
  skipped: string[];
  /** iptables-restore --noflush lines; empty when there is nothing to do. */
  lines: string[];
}

/**
 * The chains to delete: only chains a jump attributes to a network and container (the comment and the chain
 * name agree), and only those `isOrphan` says are dead. A chain that rules outside CNI-HOSTPORT-DNAT still
 * jump to is someone else's business and is left alone.
 *
 * The jumps are removed with `-D CNI-HOSTPORT-DNAT <exact rule>` inside the transaction, not by rewriting
 * CNI-HOSTPORT-DNAT from what we read: portmap appends its jumps with plain `iptables -A`, so a rewrite would
 * silently drop the jump of a pod added between our read and our write. With -D, such a race makes the
 * transaction fail as a whole (a rule we meant to delete is gone) and we read again.
 */
export function planGc(
  table: NatTable,
  family: Family,
  isOrphan: (network: string, containerId: string) => boolean,
): GcPlan {
  const plan: GcPlan = { family, orphans: [], skipped: [], lines: [] };
  const jumps = portmapJumps(table);
  for (const jump of jumps) {
    const owner = jump.owner;
    if (!owner || !isOrphan(owner.network, owner.containerId) || plan.orphans.some((o) => o.chain === jump.chain))
      continue;
    const foreign = foreignReferences(table, jump.chain);
    if (foreign.length > 0) {
      plan.skipped.push(
        `IPv${family} ${jump.chain} (network ${owner.network}, container ${owner.containerId}): referenced outside ${DNAT_CHAIN}: ${formatRule(foreign[0] as Rule)}`,
      );
      continue;
    }
    plan.orphans.push({
      ...owner,
      chain: jump.chain,
      jumps: jumps.filter((j) => j.chain === jump.chain).map((j) => j.rule),
    });
  }
  const deletes = plan.orphans.flatMap((o) => o.jumps.map((rule) => formatRule(rule, "-D")));
  const chains = plan.orphans.flatMap((o) => (table.chains.has(o.chain) ? [`-F ${o.chain}`, `-X ${o.chain}`] : []));
  plan.lines = [...deletes, ...chains];
  return plan;
}

/**
 * Dead chains of this family that go now: those on a port of a live pod (`livePorts`: of any backend, as
 * livePorts() gives them), and those past the grace.
 */
export function planDead(
  table: NatTable,
  family: Family,
  wanted: ReadonlyArray<Wanted>,
  livePorts: ReadonlySet<string>,
  verdict: Liveness,
  collectNow: BackendPass["collectNow"],
  gcNetworks: ReadonlySet<string>,
): { lines: string[]; removed: Removed[]; leftAlone: string[]; undecided: number } {
  const chainOf = new Map(
    portmapJumps(table).flatMap((j) =>
      j.owner ? [[recordKey(j.owner.network, j.owner.containerId), j.chain] as const] : [],
    ),
  );
  const liveChains = new Set(wanted.map((w) => w.expected.chain));
  // A recorded DEL says the container is dead whatever the cache names: its chain is judged also in a network no
  // live pod has left (a restored old table brings such chains back).
  const judged = (network: string, v: Verdict) => gcNetworks.has(network) || v === "deleting";
  const decided = new Map<string, boolean>();
  const gc = planGc(table, family, (network, containerId) => {
    // "deleting": its DEL started and no cache entry keeps it (portmap's DEL removes it too).
    const v = verdict(network, containerId);
    if (!judged(network, v) || !mayGo(v)) return false;
    const chain = chainOf.get(recordKey(network, containerId));
    if (chain === undefined || liveChains.has(chain)) return false;
    if (!decided.has(chain)) {
      const conflicting = [...takenPorts(rulesOf(table, chain))].some((p) => livePorts.has(p));
      decided.set(chain, collectNow(family, chain, conflicting, v === "deleting"));
    }
    return decided.get(chain) as boolean;
  });
  // Chains of the judged networks that are not live pods': their verdict may change with time alone (a grace,
  // an ADD record's age), so the family cannot be settled.
  const undecided = [...chainOf].filter(([key, chain]) => {
    const [network, containerId] = key.split("\n") as [string, string];
    return judged(network, verdict(network, containerId)) && !liveChains.has(chain);
  }).length;
  return { lines: gc.lines, removed: removedOf(gc), leftAlone: gc.skipped, undecided };
}

/** The orphans of a plan, as a pass reports them. */
export const removedOf = (plan: GcPlan): Removed[] =>
  plan.orphans.map((o) => ({
    containerId: o.containerId,
    chain: { name: o.chain, network: o.network, jumps: o.jumps.length },
  }));
