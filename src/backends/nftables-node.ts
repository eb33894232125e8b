// portmap's nftables rules on the node: both families' `hostports` and `masquerading` chains, read once, and what
// the operations do with them — the pods they hold (status), dead containers' rules (gc), one keeper pass. Its
// rules carry only the container ID (no network): a container is dead only when no attachment of any network
// has it, and dead containers are judged only when a pass covers every network.

import { RulesChanged } from "../core/errors.js";
import { FAMILIES, type Family } from "../core/ip.js";
import { commentOf, type Rule, takenPorts } from "../core/rule.js";
import { type Liveness, mayGo } from "../host/liveness.js";
import { batch, CHAIN, deleteCommand, MASQ_CHAIN, NFT_FAMILY, podRules, TABLE } from "../nftables/json.js";
import { applyBatch, readHostports } from "../nftables/nft.js";
import { livePorts } from "../pipeline/attachment.js";
import {
  type BackendPass,
  emptyOutcome,
  type FamilyOutcome,
  failureText,
  fallbackEntry,
  type NodeRules,
  type Removed,
  type RuleBackend,
} from "./backend.js";
import { reconcileNft } from "./nftables-rerun.js";

export interface NftChain {
  family: Family;
  chain: string;
  /** False when the chain (or its table) does not exist: no rules. */
  present: boolean;
  rules: Rule[];
}

/** Both families' `hostports` and `masquerading` chains. */
export async function readNftChains(): Promise<NftChain[]> {
  const reads = FAMILIES.flatMap((family) =>
    [CHAIN, MASQ_CHAIN].map(async (chain) => {
      const rules = await readHostports(family, chain);
      return { family, chain, present: rules !== undefined, rules: rules ?? [] };
    }),
  );
  return Promise.all(reads);
}

/** Container IDs with rules among `rules` (their comment), in the order of their first rule. */
const containersOf = (rules: readonly Rule[]): Set<string> => new Set(rules.flatMap((r) => commentOf(r) ?? []));
const allRules = (chains: ReadonlyArray<{ rules: readonly Rule[] }>): Rule[] => chains.flatMap((c) => c.rules);

/** Pure: the delete commands for the rules of dead containers, and per container how many. */
export function planNftGc(
  chains: ReadonlyArray<{ family: Family; rules: readonly Rule[] }>,
  isDead: (id: string) => boolean,
) {
  const orphans = new Map<string, number>();
  const commands = chains.flatMap(({ family, rules }) =>
    rules.flatMap((r) => {
      const id = commentOf(r);
      if (id === undefined || !isDead(id)) return [];
      orphans.set(id, (orphans.get(id) ?? 0) + 1);
      return [deleteCommand(family, r)];
    }),
  );
  return { orphans: [...orphans].map(([containerId, rules]): Removed => ({ containerId, rules })), commands };
}

/** Deletes the rules of dead containers in one batch; a batch that lost a race with portmap's DEL is planned again once. */
async function collectNft(chains: readonly NftChain[], isDead: (id: string) => boolean, dryRun: boolean) {
  const plan = planNftGc(chains, isDead);
  if (dryRun || plan.commands.length === 0) return plan.orphans;
  try {
    await applyBatch(batch(plan.commands));
    return plan.orphans;
  } catch (err) {
    if (!(err instanceof RulesChanged)) throw err;
    const again = planNftGc(await readNftChains(), isDead);
    if (again.commands.length > 0) await applyBatch(batch(again.commands));
    return again.orphans;
  }
}

export async function readNft(backend: RuleBackend): Promise<NodeRules> {
  return nftRules(backend, await readNftChains());
}

/** The rules of the chains as read. */
export function nftRules(backend: RuleBackend, chains: readonly NftChain[]): NodeRules {
  const hostports = chains.filter((c) => c.chain === CHAIN);
  const present = containersOf(allRules(hostports));
  const dead = (verdict: Liveness) => (id: string) => mayGo(verdict(null, id));
  return {
    backend,
    // The families where portmap's nftables backend has its table.
    families: hostports.filter((c) => c.present).map((c) => c.family),
    problems: [],
    get text() {
      return JSON.stringify(chains);
    },
    portmapWrote: hostports.some((c) => c.present),
    tablesExist: hostports.some((c) => c.present),
    keyOf: (pod) => pod.containerId,
    pods: () =>
      hostports.flatMap(({ family, rules }) =>
        [...containersOf(rules)].map((id) => {
          const mine = podRules(rules, id);
          return {
            family,
            key: id,
            place: `${NFT_FAMILY[family]} ${TABLE} ${CHAIN}`,
            owner: { network: null, containerId: id },
            rules: mine,
            // portmap's jumps into `hostports` are shared: every rule there takes traffic, the first one wins.
            reachable: true,
            rank: (i: number) => [0, rules.indexOf(mine[i] as Rule)] as const,
          };
        }),
      ),
    holds: (pod) => present.has(pod.containerId),
    async collect(verdict, dryRun) {
      return [{ family: undefined, removed: await collectNft(chains, dead(verdict), dryRun), leftAlone: [] }];
    },
    keep: (pass) => keepNft(backend, chains, pass),
  };
}

/** The dead containers whose rules go now (BackendPass.collectNow), and how many dead ones there are. */
export function deadNow(
  chains: ReadonlyArray<Omit<NftChain, "present">>,
  { view, verdict, collectNow }: Pick<BackendPass, "view" | "verdict" | "collectNow">,
): { goes: Set<string>; dead: number } {
  const taken = livePorts(view.cache.attachments, (a) => verdict(a.network, a.containerId) === "live");
  const goes = new Set<string>();
  let count = 0;
  for (const id of containersOf(allRules(chains))) {
    const v = verdict(null, id);
    if (!mayGo(v)) continue;
    count++;
    // Its rules go together (all families, both chains): conflicting when any of them takes a live pod's port.
    const mine = chains.map((c) => ({ ...c, rules: c.rules.filter((r) => commentOf(r) === id) }));
    const conflicting = [...takenPorts(mine.filter((c) => c.chain === CHAIN).flatMap((c) => c.rules))].some((p) =>
      taken.has(p),
    );
    const families = new Set<Family>(mine.filter((c) => c.rules.length > 0).map((c) => c.family));
    const decisions = [...families].map((family) =>
      collectNow(family, `${TABLE} ${id}`, conflicting, v === "deleting"),
    );
    if (decisions.every(Boolean)) goes.add(id);
  }
  return { goes, dead: count };
}

const SETTLED_KEY = "nftables";

/**
 * A keeper pass over portmap's nftables rules: each live attachment whose rules are (or belong) there is
 * re-scoped, or given portmap's ADD again when its rules are gone (nftables-rerun.ts); the rules of dead
 * containers go — at once when they take a live pod's port, else after the grace.
 */
async function keepNft(
  backend: RuleBackend,
  chains: readonly NftChain[],
  { view, live, verdict, mayRebuild, collectNow, settled, options }: BackendPass,
): Promise<{ families: FamilyOutcome[]; problems: string[] }> {
  const problems: string[] = [];
  // A node where no pod uses portmap's nftables backend: nothing to say.
  if (live.length === 0 && chains.every((c) => c.rules.length === 0)) return { families: [], problems };
  const outcome = emptyOutcome(backend.name, undefined);
  // The cheap resync: the same rules (handles included), node addresses and attachments as a pass that found
  // everything correct.
  const text = JSON.stringify([chains, view.network, options.managed ?? null, options.networks, options.scope]);
  const key = String(options.rebuild);
  const attachments = live.map((l) => l.attachment);
  const before = settled.get(SETTLED_KEY);
  settled.delete(SETTLED_KEY);
  if (
    before &&
    before.text === text &&
    before.key === key &&
    before.inputs.length === attachments.length &&
    before.inputs.every((a, i) => a === attachments[i])
  ) {
    settled.set(SETTLED_KEY, before);
    return { families: [{ ...outcome, correct: before.correct }], problems };
  }
  // Rules that name no network are judged only when every network is.
  const gc = options.networks.length === 0 ? deadNow(chains, { view, verdict, collectNow }) : undefined;
  if (gc && gc.goes.size > 0) {
    try {
      outcome.removed = await collectNft(chains, (id) => gc.goes.has(id), options.dryRun);
    } catch (err) {
      outcome.failure = failureText(err);
    }
  }
  const hostports = chains.filter((c) => c.chain === CHAIN);
  const present = containersOf(allRules(hostports));
  // Other pods' rules remain: a pod's rules gone is what its DEL does (a flush or a deleted table takes all).
  const others = (id: string) => [...present].some((p) => p !== id);
  const read = { network: view.network, hostports: new Map(hostports.map((c) => [c.family, c.rules])) };
  for (const l of options.rebuild ? live : []) {
    try {
      const done = await reconcileNft(backend, l.attachment, present.has(l.attachment.containerId), {
        cniBinDir: options.cniBinDir,
        dryRun: options.dryRun,
        fallback: fallbackEntry(options.managed, l.attachment),
        mayRerun: () => mayRebuild(l.key, others(l.attachment.containerId)),
        warn: (t) => problems.push(t),
        read,
      });
      if (done.state === "correct") outcome.correct++;
      else if (done.state === "waiting") outcome.waiting.push(l.label);
      else {
        outcome.rebuilt++;
        outcome.actions.push(`${l.label}: ${done.text}`);
        outcome.repaired.push({ attachment: l.attachment, place: `${TABLE} ${CHAIN}` });
      }
    } catch (err) {
      outcome.skipped.push(`${l.label}: ${(err as Error).message}`);
    }
  }
  if (
    outcome.removed.length === 0 &&
    outcome.actions.length === 0 &&
    outcome.waiting.length === 0 &&
    outcome.skipped.length === 0 &&
    outcome.failure === undefined &&
    (gc?.dead ?? 0) === 0
  )
    settled.set(SETTLED_KEY, { text, key, inputs: attachments, correct: outcome.correct });
  return { families: [outcome], problems };
}
