// The iptables backend's rules on the node: both families' nat tables, read once, and what the operations do with
// them — the pods they hold (status), the chains of dead pods (gc), one keeper pass (reconcile, the keeper).
import type { Family } from "../core/ip.js";
import { FAMILIES } from "../core/ip.js";
import type { NodeNetwork } from "../core/node.js";
import type { CachedAttachment } from "../host/cache.js";
import { mayGo } from "../host/liveness.js";
import { portmapChainName } from "../iptables/chain-name.js";
import type { Nat } from "../iptables/nat.js";
import {
  DNAT_CHAIN,
  type NatTable,
  POD_CHAIN_PREFIX,
  parseTable,
  podChains,
  portmapJumps,
  rulesOf,
} from "../iptables/table.js";
import { natTransaction } from "../iptables/text.js";
import { type ExpectedChain, expectedChains, livePorts } from "../pipeline/attachment.js";
import { dropStaleUdp } from "../pipeline/conntrack.js";
import {
  type BackendPass,
  type Collected,
  emptyOutcome,
  type FamilyOutcome,
  failureText,
  fallbackEntry,
  type NodeRules,
  type RuleBackend,
  sameItems,
} from "./backend.js";
import { type FamilyPlan, planDead, planGc, planReconcile, removedOf, type Wanted } from "./iptables-plan.js";

/** Both families' nat tables; a family whose tool fails is left out and said in `problems`. */
export async function readNat(backend: RuleBackend, nat: Nat): Promise<NodeRules> {
  const texts = new Map<Family, string>();
  const problems: string[] = [];
  const read = await Promise.allSettled(FAMILIES.map((f) => nat.readTable(f)));
  read.forEach((r, i) => {
    const family = FAMILIES[i] as Family;
    if (r.status === "fulfilled") texts.set(family, r.value);
    else problems.push(`IPv${family} nat table not read: ${(r.reason as Error).message}`);
  });
  return natRules(backend, nat, texts, problems);
}

/** The rules of the tables as read (`iptables -S` text per family), written back through `nat`. */
export function natRules(
  backend: RuleBackend,
  nat: Nat,
  texts: ReadonlyMap<Family, string>,
  problems: readonly string[] = [],
): NodeRules {
  // Parsed when first needed: a keeper resync that finds a family as it left it never parses it.
  const parsed = new Map<Family, NatTable>();
  const tableOf = (family: Family): NatTable => {
    let table = parsed.get(family);
    if (!table) {
      table = parseTable(texts.get(family) as string);
      parsed.set(family, table);
    }
    return table;
  };
  const tables = () => [...texts.keys()].map((f) => [f, tableOf(f)] as const);
  // Which chains exist, from the `-N` lines alone (cheaper than a parse): which pods the backend holds.
  const declared = new Set(
    [...texts.values()].flatMap((text) => [...text.matchAll(/^-N (\S+)$/gm)].map((m) => m[1] as string)),
  );
  return {
    backend,
    families: [...texts.keys()],
    problems,
    get text() {
      return [...texts].map(([family, text]) => `${family}\n${text}`).join("\n");
    },
    portmapWrote: [...declared].some((c) => c === DNAT_CHAIN || c.startsWith(POD_CHAIN_PREFIX)),
    // A table that exists lists its built-in chains; legacy's absent one reads as "" (nat.ts).
    tablesExist: [...texts.values()].some((text) => text !== ""),
    keyOf: (pod) => portmapChainName(pod.network, pod.containerId),
    pods: () =>
      tables().flatMap(([family, table]) => {
        // The first jump to each chain: the one that sees packets first.
        const jumps = new Map<string, ReturnType<typeof portmapJumps>[number]>();
        for (const j of portmapJumps(table)) if (!jumps.has(j.chain)) jumps.set(j.chain, j);
        return podChains(table).map((chain) => {
          const jump = jumps.get(chain);
          return {
            family,
            key: chain,
            place: chain,
            owner: jump?.owner,
            rules: rulesOf(table, chain),
            reachable: jump !== undefined,
            rank: (i: number) => [jump?.index ?? Number.MAX_SAFE_INTEGER, i] as const,
          };
        });
      }),
    holds: (pod) => declared.has(portmapChainName(pod.network, pod.containerId)),
    async collect(dead, dryRun) {
      const isOrphan = (network: string, id: string) => mayGo(dead(network, id));
      const out: Collected[] = [];
      for (const [family, table] of tables()) {
        let plan = planGc(table, family, isOrphan);
        if (!dryRun && plan.lines.length > 0) {
          try {
            await nat.restore(family, natTransaction(plan.lines), "the GC of orphan portmap chains");
          } catch {
            // A race with portmap (a jump gone or added since the read): read again, once.
            plan = planGc(parseTable(await nat.readTable(family)), family, isOrphan);
            if (plan.lines.length > 0)
              await nat.restore(family, natTransaction(plan.lines), "the GC of orphan portmap chains");
          }
        }
        out.push({ family, removed: removedOf(plan), leftAlone: plan.skipped });
      }
      return out;
    },
    keep: (pass) => keepNat(backend, nat, texts, tableOf, pass),
  };
}

// An attachment parsed once (the keeper's cache memo) is the same object at every pass: its chains are computed
// again only when the node's addresses or the managed conflist (its network, our entry in it) changed.
const expectedMemo = new WeakMap<CachedAttachment, { key: string; chains: ExpectedChain[] }>();

function expectedOf(
  a: CachedAttachment,
  network: NodeNetwork,
  fallback: Record<string, unknown> | undefined,
  key: string,
): ExpectedChain[] {
  const known = expectedMemo.get(a);
  if (known?.key === key) return known.chains;
  const chains = expectedChains(a, network, fallback);
  expectedMemo.set(a, { key, chains });
  return chains;
}

/** A keeper pass over the nat tables: one transaction per family, live pods rebuilt, dead chains gone. */
async function keepNat(
  backend: RuleBackend,
  nat: Nat,
  texts: ReadonlyMap<Family, string>,
  tableOf: (family: Family) => NatTable,
  { view, live, verdict, mayRebuild, collectNow, gcNetworks, settled, options }: BackendPass,
): Promise<{ families: FamilyOutcome[]; problems: string[] }> {
  const problems: string[] = [];
  const wanted: Wanted[] = [];
  const inputsKey = JSON.stringify([view.network, options.managed ?? null]);
  const attachments = new Map(live.map((l) => [l.key, l.attachment]));
  for (const l of live) {
    try {
      const fallback = fallbackEntry(options.managed, l.attachment);
      for (const expected of expectedOf(l.attachment, view.network, fallback, inputsKey))
        wanted.push({ label: l.label, key: l.key, expected });
    } catch (err) {
      // Left as it is: writing portmap's unscoped rules would open what the policy refuses.
      if (options.rebuild) problems.push(`skipped ${l.label}: ${(err as Error).message}`);
    }
  }
  const taken = livePorts(view.cache.attachments, (a) => verdict(a.network, a.containerId) === "live");
  const families: FamilyOutcome[] = [];
  const key = `${options.rebuild}\n${[...gcNetworks].sort().join("\n")}`;
  for (const [family, text] of texts) {
    const mine = wanted.filter((w) => w.expected.family === family);
    const expected = mine.map((w) => w.expected);
    const settledKey = `${backend.name}\n${family}`;
    const before = settled.get(settledKey);
    settled.delete(settledKey);
    // The cheap resync: the same table text and the same expected chains as a pass that found all correct.
    if (before && before.text === text && before.key === key && sameItems(before.inputs, expected)) {
      settled.set(settledKey, before);
      families.push({ ...emptyOutcome(backend.name, family), correct: before.correct });
      continue;
    }
    const table = tableOf(family);
    const plan: FamilyPlan = options.rebuild
      ? planReconcile(table, family, mine, (w, alone) => mayRebuild(w.key, alone))
      : planReconcile(table, family, [], () => false);
    const dead = planDead(table, family, mine, taken, verdict, collectNow, gcNetworks);
    const lines = [...plan.declarations, ...dead.lines, ...plan.commands];
    const outcome: FamilyOutcome = {
      ...emptyOutcome(backend.name, family),
      removed: dead.removed,
      leftAlone: dead.leftAlone,
      actions: plan.actions,
      repaired: plan.rebuilt.flatMap((r) => {
        const attachment = attachments.get(r.key);
        return attachment ? [{ attachment, place: r.expected.chain }] : [];
      }),
      correct: plan.correct.length,
      rebuilt: plan.rebuilt.length,
      lines: lines.length,
      payload: lines.length > 0 ? natTransaction(lines) : "",
      skipped: plan.skipped,
      waiting: plan.waiting,
    };
    families.push(outcome);
    if (lines.length === 0 && plan.waiting.length === 0 && plan.skipped.length === 0 && dead.undecided === 0)
      settled.set(settledKey, { text, key, inputs: expected, correct: plan.correct.length });
    if (lines.length === 0 || options.dryRun) continue;
    try {
      await nat.restore(family, outcome.payload, "the keeper's hostPort rules");
    } catch (err) {
      outcome.failure = failureText(err);
      continue;
    }
    outcome.droppedUdp = await dropStale(plan, family, (t) => problems.push(t));
  }
  return { families, problems };
}

async function dropStale(plan: FamilyPlan, family: Family, warn: (t: string) => void): Promise<number> {
  const rewrites = plan.rebuilt.map((r) => ({ before: r.before, after: r.expected.rules }));
  if (rewrites.length === 0) return 0;
  return dropStaleUdp(family, rewrites, warn).catch((err: Error) => {
    warn(err.message);
    return 0;
  });
}
