// `portmap-hostip reconcile`: rebuild, from libcni's result cache, the hostPort rules of every attachment
// whose chain is missing or wrong (after a firewall reload or a flush), and the shared chains portmap needs,
// in one iptables-restore transaction per family. Correct chains are not touched. Attachments of portmap's
// nftables backend are reconciled by reconcile-nft.ts.
import { readNodeNetwork } from "../host/network.js";
import { isNftAttachment, nftPods, reconcileNft } from "./reconcile-nft.js";
import { restoreNat } from "../iptables/backend.js";
import { type Rule, ruleKey, sameRule, sameRules } from "../core/rule.js";
import { formatRule, natTransaction } from "../iptables/text.js";
import type { Family } from "../core/ip.js";
import { type ExpectedChain, expectedChains } from "./attachment.js";
import { attachmentLabel, readResultCache, selectsNetwork } from "./cache.js";
import { dropStaleUdp } from "../pipeline/conntrack.js";
import { readTables } from "./kernel.js";
import { portmapSharedRules } from "./portmap.js";
import { type NatTable, portmapJumps, rulesOf } from "../iptables/table.js";

export interface Wanted {
  label: string;
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
  actions: string[];
  rebuilt: Rebuilt[];
  correct: string[];
  skipped: string[];
}

/** Pure: what to write so that every wanted chain, its jumps and portmap's shared rules are as they must be. */
export function planReconcile(table: NatTable, family: Family, wanted: readonly Wanted[]): FamilyPlan {
  const plan: FamilyPlan = { family, lines: [], actions: [], rebuilt: [], correct: [], skipped: [] };
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
  const jumps = portmapJumps(table);

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
      if (rulesOf(table, s.rule.chain).some((r) => sameRule(r, s.rule)) || added.has(key)) continue;
      added.add(key);
      commands.push(formatRule(s.rule, s.first ? "-I" : "-A"));
      plan.actions.push(`added ${formatRule(s.rule)}`);
    }
    const exists = table.chains.has(e.chain);
    const before = exists ? rulesOf(table, e.chain) : [];
    const currentJumps = jumps.filter((j) => j.chain === e.chain).map((j) => j.rule);
    const chainOk = exists && sameRules(before, e.rules);
    const has = (rules: readonly Rule[], rule: Rule) => rules.some((r) => sameRule(r, rule));
    const jumpsOk = currentJumps.length === e.jumps.length && e.jumps.every((j) => has(currentJumps, j));
    if (chainOk && jumpsOk) {
      plan.correct.push(w.label);
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
    plan.actions.push(`${w.label}: ${what} ${e.chain}${jumpsOk ? "" : `, jumps ${currentJumps.length} → ${e.jumps.length}`}`);
  }
  plan.lines = [...declarations, ...commands];
  return plan;
}

interface Flags {
  cacheDir: string;
  dryRun: boolean;
  /** Only these networks' attachments (none: every network). */
  networks: readonly string[];
  /** Where the node's portmap is (for attachments of its nftables backend). */
  cniBinDir: string;
}

export async function runReconcile(flags: Flags, stdout: (t: string) => void, stderr: (t: string) => void): Promise<number> {
  const [cache, { tables, problems }, network, inNft] = await Promise.all([readResultCache(flags.cacheDir), readTables(), readNodeNetwork(), nftPods()]);
  let failed = problems.length + cache.problems.length;
  for (const p of [...cache.problems, ...problems]) stderr(`portmap-hostip reconcile: ${p}\n`);
  if (!cache.present) {
    stderr(`portmap-hostip reconcile: no result cache at ${cache.dir}: nothing to rebuild from\n`);
    return 1;
  }
  const wanted: Wanted[] = [];
  const selected = cache.attachments.filter((c) => selectsNetwork(flags.networks, c.network));
  const nft = selected.filter((a) => isNftAttachment(a, inNft));
  for (const a of selected.filter((x) => !nft.includes(x))) {
    const label = `${attachmentLabel(a)} (${a.network}, ${a.containerId})`;
    try {
      for (const expected of expectedChains(a, network)) wanted.push({ label, expected });
    } catch (err) {
      failed++;
      // Left as it is: writing portmap's unscoped rules would open what the policy refuses.
      stdout(`skipped ${label}: ${(err as Error).message}\n`);
    }
  }
  const verb = flags.dryRun ? "would write" : "wrote";
  for (const [family, table] of tables) {
    const plan = planReconcile(
      table,
      family,
      wanted.filter((w) => w.expected.family === family),
    );
    for (const s of plan.skipped) stdout(`IPv${family}: skipped ${s}\n`);
    failed += plan.skipped.length;
    for (const a of plan.actions) stdout(`IPv${family}: ${a}\n`);
    stdout(`IPv${family}: ${plan.correct.length} attachment(s) correct, left alone; ${plan.rebuilt.length} rebuilt${plan.lines.length > 0 ? ` (${verb} ${plan.lines.length} lines in one transaction)` : ""}\n`);
    if (plan.lines.length === 0) continue;
    const payload = natTransaction(plan.lines);
    if (flags.dryRun) {
      stdout(payload.replace(/^/gm, "    ").trimEnd() + "\n");
      continue;
    }
    try {
      await restoreNat(family, payload, `the reconciled hostPort rules`);
    } catch (err) {
      failed++;
      stderr(`portmap-hostip reconcile: IPv${family}: ${(err as Error).message}${(err as { details?: string }).details ? `\n${(err as { details?: string }).details}` : ""}\n`);
      continue;
    }
    const rewrites = plan.rebuilt.map((r) => ({ before: r.before, after: r.expected.rules }));
    const dropped = await dropStaleUdp(family, rewrites, (t) => stderr(`portmap-hostip reconcile: ${t}\n`));
    if (dropped > 0) stdout(`IPv${family}: removed ${dropped} stale UDP conntrack entr${dropped === 1 ? "y" : "ies"}\n`);
  }
  for (const a of nft) {
    const label = `${attachmentLabel(a)} (${a.network}, ${a.containerId})`;
    try {
      const warn = (t: string) => stderr(`portmap-hostip reconcile: ${t}\n`);
      stdout(`nftables: ${label}: ${await reconcileNft(a, inNft.has(a.containerId), { ...flags, warn })}\n`);
    } catch (err) {
      failed++;
      stdout(`nftables: skipped ${label}: ${(err as Error).message}\n`);
    }
  }
  return failed > 0 ? 1 : 0;
}
