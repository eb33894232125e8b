// What the operator commands read from the namespace they run in: both nat tables and portmap's nftables rules.
import type { Family } from "../core/ip.js";
import type { Rule } from "../core/rule.js";
import { readTable } from "../iptables/backend.js";
import { type NatTable, parseTable } from "../iptables/table.js";
import { readHostports } from "../nftables/backend.js";

export const FAMILIES: readonly Family[] = [4, 6];

/**
 * Both families' nat tables. A family whose tool fails (a node without ip6tables, say) is left out and said
 * in `problems`; the caller decides whether the other family is enough.
 */
export async function readTables(
  families: readonly Family[] = FAMILIES,
): Promise<{ tables: Map<Family, NatTable>; problems: string[] }> {
  const tables = new Map<Family, NatTable>();
  const problems: string[] = [];
  const read = await Promise.allSettled(families.map((f) => readTable(f)));
  read.forEach((r, i) => {
    const family = families[i] as Family;
    if (r.status === "fulfilled") tables.set(family, parseTable(r.value));
    else problems.push(`IPv${family} nat table not read: ${(r.reason as Error).message}`);
  });
  return { tables, problems };
}

/** portmap's nftables `hostports` rules per family; a family without that table is left out. */
export async function readNftTables(families: readonly Family[] = FAMILIES): Promise<Map<Family, Rule[]>> {
  const read = await Promise.all(families.map((f) => readHostports(f)));
  return new Map(families.flatMap((f, i) => (read[i] === undefined ? [] : [[f, read[i]] as const])));
}
