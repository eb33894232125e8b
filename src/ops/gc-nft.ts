// `portmap-hostip gc` for portmap's nftables backend: the rules (in `hostports` and `masquerading`, both
// families) of containers that have no cached attachment at all. A rule carries only the container ID, no
// network name, so CNI GC (which speaks for one network) leaves them alone: a container dead on one network
// may be alive on another.
import type { Family } from "../core/ip.js";
import { commentOf, type Rule } from "../core/rule.js";
import { applyBatch, RulesChanged, readHostports } from "../nftables/backend.js";
import { batch, CHAIN, deleteCommand, MASQ_CHAIN } from "../nftables/json.js";
import { FAMILIES } from "./kernel.js";

export interface NftOrphan {
  containerId: string;
  /** Rules deleted (or to delete), all families and chains. */
  rules: number;
}

/** Pure: the delete commands for the rules of dead containers, and per container how many. */
export function planNftGc(
  chains: ReadonlyArray<{ family: Family; rules: readonly Rule[] }>,
  isDead: (containerId: string) => boolean,
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
  return { orphans: [...orphans].map(([containerId, rules]): NftOrphan => ({ containerId, rules })), commands };
}

export interface NftChain {
  family: Family;
  chain: string;
  rules: Rule[];
}

/** Both families' `hostports` and `masquerading` chains (a chain that does not exist: no rules). */
export async function readNftChains(): Promise<NftChain[]> {
  const reads = FAMILIES.flatMap((family) =>
    [CHAIN, MASQ_CHAIN].map(async (chain) => ({ family, chain, rules: (await readHostports(family, chain)) ?? [] })),
  );
  return Promise.all(reads);
}

/** Reads, plans and applies (one batch); a batch that lost a race with portmap's DEL is planned again once. */
export async function collectNft(isDead: (containerId: string) => boolean, dryRun: boolean): Promise<NftOrphan[]> {
  const plan = planNftGc(await readNftChains(), isDead);
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
