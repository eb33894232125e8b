// The keeper's backend for portmap's nftables backend (`ip`/`ip6 cni_hostport`): each live attachment whose
// rules are (or belong) there is re-scoped, or given portmap's ADD again when its rules are gone
// (ops/reconcile-nft.ts); the rules of dead containers go — at once when they take a live pod's port, else
// after the grace. Its rules carry only the container ID (no network): a container is dead only when no
// attachment of any network has it, and they are judged only when the pass covers every network.
import { parseNetConf } from "../core/config.js";
import type { Family } from "../core/ip.js";
import { commentOf, takenPorts } from "../core/rule.js";
import type { ContainerRecord } from "../host/record.js";
import { addMayBeRunning } from "../host/state.js";
import { CHAIN } from "../nftables/json.js";
import { entryConf } from "./attachment.js";
import { type CachedAttachment, ownedByUnreadable } from "./cache.js";
import { collectNft, type NftChain, readNftChains } from "./gc-nft.js";
import type { BackendPass, FamilyOutcome, KeeperBackend, NodeView } from "./keep.js";
import { reconcileNft } from "./reconcile-nft.js";

/** A family's outcome before anything happened (`family` undefined: the backend's one outcome for both). */
export const emptyOutcome = (backend: string, family: Family | undefined): FamilyOutcome => ({
  backend,
  family,
  actions: [],
  correct: 0,
  rebuilt: 0,
  lines: 0,
  payload: "",
  skipped: [],
  waiting: [],
  failure: undefined,
  droppedUdp: 0,
});

const SETTLED_KEY = "nftables";

export const sameItems = (a: readonly unknown[], b: readonly unknown[]): boolean =>
  a.length === b.length && a.every((x, i) => x === b[i]);

/** An error's message, and the tool's own words (CniError details) on the next line. */
export const failureText = (err: unknown): string => {
  const details = (err as { details?: string }).details;
  return `${(err as Error).message}${details ? `\n${details}` : ""}`;
};

/** Container IDs with rules in the given chains (their comment). */
const containersOf = (chains: readonly NftChain[]): Set<string> =>
  new Set(chains.flatMap((c) => c.rules.flatMap((r) => commentOf(r) ?? [])));

/** "tcp/8080" for each hostPort the runtime asked for (the cached capability arguments, as portmap reads them). */
function mappedPorts(a: CachedAttachment): string[] {
  const entry = a.plugins.find((p) => p.type === "portmap");
  try {
    return entry ? parseNetConf(entryConf(a, entry)).portMappings.map((m) => `${m.protocol}/${m.hostPort}`) : [];
  } catch {
    return []; // mappings portmap itself refuses take no port
  }
}

/**
 * Whether a container with nftables rules is dead: no attachment of any network (nor an unreadable cache
 * file) has it and no ADD of it may be running. `deleted`: a DEL of it is recorded.
 */
function deadness(view: NodeView): (containerId: string) => { deleted: boolean } | undefined {
  const cached = new Set(view.cache.attachments.map((a) => a.containerId));
  const records = new Map<string, ContainerRecord[]>();
  for (const r of view.records.values()) records.set(r.containerId, [...(records.get(r.containerId) ?? []), r]);
  return (id) => {
    const mine = records.get(id) ?? [];
    if (cached.has(id) || ownedByUnreadable(view.cache, null, id) || mine.some((r) => addMayBeRunning(r, view.now)))
      return undefined;
    return { deleted: mine.some((r) => r.state === "deleted") };
  };
}

/** The dead containers whose rules go now (BackendPass.collectNow), and how many dead ones there are. */
export function deadNow(
  chains: readonly NftChain[],
  { view, verdict, collectNow }: Pick<BackendPass, "view" | "verdict" | "collectNow">,
): { goes: Set<string>; dead: number } {
  const dead = deadness(view);
  // A dead rule takes the port from a live pod of either backend: portmap's nftables hooks see every packet.
  const livePorts = new Set(
    view.cache.attachments.filter((a) => verdict(a.network, a.containerId) === "live").flatMap(mappedPorts),
  );
  const goes = new Set<string>();
  let count = 0;
  for (const id of containersOf(chains)) {
    const fate = dead(id);
    if (!fate) continue;
    count++;
    // Its rules go together (all families, both chains): conflicting when any of them takes a live pod's port.
    const mine = chains.map((c) => ({ ...c, rules: c.rules.filter((r) => commentOf(r) === id) }));
    const conflicting = [...takenPorts(mine.filter((c) => c.chain === CHAIN).flatMap((c) => c.rules))].some((p) =>
      livePorts.has(p),
    );
    const families = new Set<Family>(mine.filter((c) => c.rules.length > 0).map((c) => c.family));
    const decisions = [...families].map((family) =>
      collectNow(family, `cni_hostport ${id}`, conflicting, fate.deleted),
    );
    if (decisions.every(Boolean)) goes.add(id);
  }
  return { goes, dead: count };
}

/**
 * The nftables backend. Its attachments: those with rules in a `cni_hostport hostports` chain, and those
 * without rules anywhere whose cached portmap entry says `backend: "nftables"` (survey, keep.ts).
 */
export const nftablesBackend: KeeperBackend = {
  name: "nftables",
  async survey() {
    const chains = await readNftChains();
    return { containers: containersOf(chains.filter((c) => c.chain === CHAIN)), read: chains };
  },
  async pass({ view, live, verdict, mayRebuild, collectNow, settled, options, surveyed }) {
    const chains = surveyed as NftChain[];
    const problems: string[] = [];
    // A node where no pod uses portmap's nftables backend: nothing to say.
    if (live.length === 0 && chains.every((c) => c.rules.length === 0)) return { families: [], problems };
    const outcome = emptyOutcome("nftables", undefined);
    // The cheap resync: the same rules (handles included), node addresses and attachments as a pass that
    // found everything correct.
    const inputs = JSON.stringify([chains, view.network, options.fallbackEntry ?? null, options.networks]);
    const attachments = live.map((l) => l.attachment);
    const before = settled.get(SETTLED_KEY);
    settled.delete(SETTLED_KEY);
    if (before && before.text === inputs && sameItems(before.expected, attachments)) {
      settled.set(SETTLED_KEY, before);
      return { families: [{ ...outcome, correct: before.correct }], problems };
    }
    // Rules that name no network are judged only when every network is.
    const gc = options.networks.length === 0 ? deadNow(chains, { view, verdict, collectNow }) : undefined;
    if (gc && gc.goes.size > 0) {
      try {
        for (const o of await collectNft((id) => gc.goes.has(id), options.dryRun))
          outcome.actions.push(`deleted ${o.rules} rule(s) of dead container ${o.containerId}`);
      } catch (err) {
        outcome.failure = failureText(err);
      }
    }
    const hostports = chains.filter((c) => c.chain === CHAIN);
    const present = containersOf(hostports);
    const read = { network: view.network, hostports: new Map(hostports.map((c) => [c.family, c.rules])) };
    for (const l of live) {
      try {
        const done = await reconcileNft(l.attachment, present.has(l.attachment.containerId), {
          cniBinDir: options.cniBinDir,
          dryRun: options.dryRun,
          fallback: options.fallbackEntry,
          mayRerun: () => mayRebuild(l.key),
          warn: (text) => problems.push(text),
          read,
        });
        if (done.state === "correct") outcome.correct++;
        else if (done.state === "waiting") outcome.waiting.push(l.label);
        else {
          outcome.rebuilt++;
          outcome.actions.push(`${l.label}: ${done.text}`);
        }
      } catch (err) {
        outcome.skipped.push(`${l.label}: ${(err as Error).message}`);
      }
    }
    if (
      outcome.actions.length === 0 &&
      outcome.waiting.length === 0 &&
      outcome.skipped.length === 0 &&
      outcome.failure === undefined &&
      (gc?.dead ?? 0) === 0
    )
      settled.set(SETTLED_KEY, { text: inputs, expected: attachments, gcNetworks: "", correct: outcome.correct });
    return { families: [outcome], problems };
  },
};
