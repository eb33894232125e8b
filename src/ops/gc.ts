// Garbage collection of portmap chains whose attachment is gone: as CNI GC (the runtime names the valid
// attachments) and as `portmap-hostip gc` (the result cache is the set of live attachments).
import * as z from "zod/mini";
import { parseEnvelope, parseShape } from "../core/config.js";
import { CniError, Code } from "../core/errors.js";
import type { Family } from "../core/ip.js";
import type { Rule } from "../core/rule.js";
import { restoreNat } from "../iptables/backend.js";
import { DNAT_CHAIN, foreignReferences, type NatTable, portmapJumps } from "../iptables/table.js";
import { formatRule, natTransaction } from "../iptables/text.js";
import { readTables } from "./kernel.js";

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

type IsOrphan = (family: Family, network: string, containerId: string) => boolean;

/** Reads, plans and applies GC per family, one transaction each; a failed transaction is planned again once. */
export async function collect(isOrphan: IsOrphan, dryRun: boolean): Promise<{ plans: GcPlan[]; problems: string[] }> {
  const { tables, problems } = await readTables();
  const plans: GcPlan[] = [];
  for (const [family, table] of tables) {
    let plan = planGc(table, family, (n, id) => isOrphan(family, n, id));
    if (!dryRun && plan.lines.length > 0) {
      try {
        await restoreNat(family, natTransaction(plan.lines), "the GC of orphan portmap chains");
      } catch {
        const again = (await readTables([family])).tables.get(family);
        if (!again) throw new CniError(Code.IoFailure, `IPv${family} nat table cannot be read again after a failed GC`);
        plan = planGc(again, family, (n, id) => isOrphan(family, n, id));
        if (plan.lines.length > 0)
          await restoreNat(family, natTransaction(plan.lines), "the GC of orphan portmap chains");
      }
    }
    plans.push(plan);
  }
  return { plans, problems };
}

const AttachmentsSchema = z.array(z.looseObject({ containerID: z.string(), ifname: z.optional(z.string()) }));
const GcConfSchema = z.looseObject({
  "cni.dev/valid-attachments": z.optional(AttachmentsSchema),
  "cni.dev/attachments": z.optional(AttachmentsSchema),
});

/** CNI GC: delete this network's chains whose container is in no valid attachment. Never another network's. */
export async function cniGc(json: unknown): Promise<void> {
  const { name } = parseEnvelope(json);
  const conf = parseShape(GcConfSchema, json);
  const valid = conf["cni.dev/valid-attachments"] ?? conf["cni.dev/attachments"];
  // Without the list, nothing says which attachments are dead.
  if (valid === undefined) return;
  const live = new Set(valid.map((a) => a.containerID));
  const { plans, problems } = await collect((_f, network, id) => network === name && !live.has(id), false);
  if (plans.length === 0) throw new CniError(Code.IoFailure, problems.join("; "));
  for (const line of [...problems, ...plans.flatMap((p) => p.skipped)])
    process.stderr.write(`portmap-hostip GC: ${line}\n`);
}
