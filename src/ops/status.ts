// `portmap-hostip status`: one row per hostPort mapping found in the nat tables (and portmap's nftables
// tables), with its owner and state.
// status() is pure (tables, cache, node network in; rows out); the renderers format them.
import { parseNetConf } from "../core/config.js";
import { type Cidr, cidrContains, type Family, parseCidr } from "../core/ip.js";
import type { NodeNetwork } from "../core/node.js";
import { commentOf, destinationOf, dnatOf, dportOf, protocolOf, type Rule, sourceOf } from "../core/rule.js";
import { portmapChainName } from "../iptables/chain-name.js";
import { type NatTable, podChains, portmapJumps, rulesOf } from "../iptables/table.js";
import { CHAIN, NFT_FAMILY, podRules, TABLE } from "../nftables/json.js";
import { nodeAddresses } from "../policy/resolve.js";
import { ourConf } from "./attachment.js";
import { attachmentLabel, type CachedAttachment, type CacheRead, ownedByUnreadable } from "./cache.js";

export const STATES = ["scoped", "unscoped", "captures-service", "conflict", "orphan"] as const;
export type State = (typeof STATES)[number];

export interface StatusRow {
  family: Family;
  /** namespace/name from the cached CNI_ARGS, else the container ID, else "?" (an unattributable chain). */
  pod: string;
  network: string | null;
  containerId: string | null;
  /** The pod's iptables chain, or `ip cni_hostport hostports` / `ip6 …` for portmap's nftables backend. */
  chain: string;
  protocol: string;
  hostPort: number;
  /** Destination addresses the rules match; empty: every local address. */
  destinations: string[];
  /** Pod address and port (`ip:port`, `[ip6]:port`). */
  target: string;
  state: State;
  /** Addresses of others (Service IPs, …) an unscoped mapping takes traffic for. */
  captures: string[];
  /** For a conflict: the pod whose rule takes the traffic (by rule order). */
  winner: string | null;
  /** False when no CNI-HOSTPORT-DNAT rule jumps to the chain: its rules take no traffic (nftables: always true). */
  reachable: boolean;
}

interface Owner {
  pod: string;
  network: string | null;
  containerId: string | null;
  attachment: CachedAttachment | undefined;
}

interface Dnat {
  protocol: string;
  hostPort: number;
  destination: string | undefined;
  target: string;
}

function dnatRule(rule: Rule): Dnat | undefined {
  const target = dnatOf(rule);
  const protocol = protocolOf(rule);
  const port = dportOf(rule);
  if (!target || !protocol || port === undefined) return undefined;
  return { protocol, hostPort: port, destination: destinationOf(rule), target };
}

/** The chain's mappings: DNAT rules grouped by protocol, port and target, destinations collected. */
function mappingsOf(
  rules: readonly Rule[],
): Array<Omit<Dnat, "destination"> & { destinations: string[]; order: number }> {
  const out: Array<Omit<Dnat, "destination"> & { destinations: string[]; order: number }> = [];
  rules.forEach((rule, order) => {
    const d = dnatRule(rule);
    if (!d) return;
    const same = out.find((m) => m.protocol === d.protocol && m.hostPort === d.hostPort && m.target === d.target);
    const row = same ?? { protocol: d.protocol, hostPort: d.hostPort, target: d.target, destinations: [], order };
    if (!same) out.push(row);
    // An unscoped rule makes the whole mapping unscoped: it matches every address.
    if (d.destination === undefined) row.destinations = [""];
    else if (!row.destinations.includes("") && !row.destinations.includes(d.destination))
      row.destinations.push(d.destination);
  });
  return out.map((m) => ({ ...m, destinations: m.destinations.includes("") ? [] : m.destinations }));
}

const overlaps = (a: readonly string[], b: readonly string[]) =>
  a.length === 0 || b.length === 0 || a.some((x) => b.includes(x));

/**
 * Local addresses an unscoped mapping takes traffic for that is meant for someone else: of its family, scope
 * global, and either on an excluded interface (kube-ipvs0: Service IPs) or neither a node address (as policy
 * "node" resolves them) nor inside a pod subnet (the node's own gateway address towards its pods).
 */
function capturedAddresses(family: Family, owner: Owner, network: NodeNetwork, podSubnets: readonly Cidr[]): string[] {
  const policy =
    (owner.attachment && ourConf(owner.attachment)?.policy) ??
    parseNetConf({ cniVersion: "1.0.0", name: "status" }).policy;
  const node = nodeAddresses(policy, network).map((ip) => ip.text);
  return network.addresses
    .filter((a) => a.ip.family === family && a.scope === "global")
    .filter(
      (a) =>
        policy.excludeInterfaces.includes(a.ifname) ||
        (!node.includes(a.ip.text) && !podSubnets.some((c) => cidrContains(c, a.ip))),
    )
    .map((a) => a.ip.text)
    .filter((ip, i, all) => all.indexOf(ip) === i);
}

function podSubnetsOf(tables: ReadonlyMap<Family, NatTable>, cache: CacheRead): Cidr[] {
  const fromResults = cache.attachments.flatMap((a) =>
    ((a.result?.["ips"] ?? []) as Array<{ address?: unknown }>).map((ip) => String(ip.address ?? "")),
  );
  const hairpins = [...tables.values()].flatMap((t) =>
    podChains(t).flatMap((c) => rulesOf(t, c).map((r) => sourceOf(r) ?? "")),
  );
  return [...fromResults, ...hairpins].flatMap((text) => {
    const c = parseCidr(text);
    // A pod address with its prefix names the subnet; 127.0.0.1/32 (the localhost mark) is none.
    return c && !(c.family === 4 ? c.text.endsWith("/32") : c.text.endsWith("/128")) ? [c] : [];
  });
}

/**
 * The rows of every mapping: from the nat tables (portmap's iptables backend: one chain per pod) and from
 * `nft` (its nftables backend: each family's `hostports` rules, the pod's by their container-ID comment).
 */
export function status(
  tables: ReadonlyMap<Family, NatTable>,
  cache: CacheRead,
  network: NodeNetwork,
  nft: ReadonlyMap<Family, Rule[]> = new Map(),
): StatusRow[] {
  const byChain = new Map(cache.attachments.map((a) => [portmapChainName(a.network, a.containerId), a]));
  const subnets = podSubnetsOf(tables, cache);
  const rows: Array<StatusRow & { rank: [number, number] }> = [];
  const row = (
    family: Family,
    owner: Owner,
    orphan: boolean,
    chain: string,
    m: ReturnType<typeof mappingsOf>[number],
    reachable: boolean,
    rank: [number, number],
  ) => {
    const captures = m.destinations.length === 0 ? capturedAddresses(family, owner, network, subnets) : [];
    const state: State = orphan
      ? "orphan"
      : m.destinations.length > 0
        ? "scoped"
        : captures.length > 0
          ? "captures-service"
          : "unscoped";
    const { pod, network: net, containerId } = owner;
    rows.push({
      family,
      pod,
      network: net,
      containerId,
      chain,
      protocol: m.protocol,
      hostPort: m.hostPort,
      destinations: m.destinations,
      target: m.target,
      state,
      captures,
      winner: null,
      reachable,
      rank,
    });
  };
  for (const [family, rules] of nft) {
    const chain = `${NFT_FAMILY[family]} ${TABLE} ${CHAIN}`;
    // Every rule of `hostports` takes traffic (portmap's jumps into it are shared); the first one wins.
    for (const id of new Set(rules.flatMap((r) => commentOf(r) ?? []))) {
      const attachment = cache.attachments.find((a) => a.containerId === id);
      const owner: Owner = attachment
        ? { pod: attachmentLabel(attachment), network: attachment.network, containerId: id, attachment }
        : { pod: id, network: null, containerId: id, attachment: undefined };
      const mine = podRules(rules, id);
      const orphan = cache.present && !attachment && !ownedByUnreadable(cache, null, id);
      for (const m of mappingsOf(mine))
        row(family, owner, orphan, chain, m, true, [0, rules.indexOf(mine[m.order] as Rule)]);
    }
  }
  for (const [family, table] of tables) {
    const jumps = portmapJumps(table);
    for (const chain of podChains(table)) {
      const attachment = byChain.get(chain);
      const jump = jumps.find((j) => j.chain === chain);
      const owner: Owner = attachment
        ? {
            pod: attachmentLabel(attachment),
            network: attachment.network,
            containerId: attachment.containerId,
            attachment,
          }
        : {
            pod: jump?.owner?.containerId ?? "?",
            network: jump?.owner?.network ?? null,
            containerId: jump?.owner?.containerId ?? null,
            attachment: undefined,
          };
      for (const m of mappingsOf(rulesOf(table, chain))) {
        // A chain whose cache file is unreadable is no orphan: nobody can tell.
        const unreadable = owner.containerId !== null && ownedByUnreadable(cache, owner.network, owner.containerId);
        row(family, owner, cache.present && !attachment && !unreadable, chain, m, jump !== undefined, [
          jump?.index ?? Number.MAX_SAFE_INTEGER,
          m.order,
        ]);
      }
    }
  }
  // Two pods claiming the same address:port: the one whose jump comes first in CNI-HOSTPORT-DNAT takes it.
  for (const row of rows) {
    if (!row.reachable) continue;
    const rivals = rows.filter(
      (o) =>
        o.reachable &&
        o.family === row.family &&
        o.protocol === row.protocol &&
        o.hostPort === row.hostPort &&
        (o.chain !== row.chain || o.containerId !== row.containerId) &&
        overlaps(o.destinations, row.destinations),
    );
    if (rivals.length === 0) continue;
    const winner = [row, ...rivals].sort((a, b) => a.rank[0] - b.rank[0] || a.rank[1] - b.rank[1])[0] as StatusRow;
    row.winner = winner.pod;
    if (row.state !== "orphan") row.state = "conflict";
  }
  return rows
    .sort(
      (a, b) =>
        a.pod.localeCompare(b.pod) ||
        a.family - b.family ||
        a.protocol.localeCompare(b.protocol) ||
        a.hostPort - b.hostPort,
    )
    .map(({ rank: _rank, ...row }) => row);
}
