// `portmap-hostip status`: one row per hostPort mapping found in every backend's rules (the nat tables, portmap's
// nftables tables), with its owner and state. status() is pure (rules as read, cache, node network and liveness
// in; rows out); the renderers format them.
// Over 300 lines: a row's state has many inputs (owner, addresses, target, conflicts, captured Services, the
// table); each is a small function here, beside the one that combines them.
import { fallbackEntry, type HeldPod, type ManagedList, type NodeRules } from "../backends/backend.js";
import { parseNetConf } from "../core/config.js";
import { type Cidr, cidrContains, type Family, parseCidr } from "../core/ip.js";
import type { NodeNetwork } from "../core/node.js";
import { destinationOf, dnatOf, dportOf, protocolOf, type Rule, sourceOf } from "../core/rule.js";
import { attachmentLabel, type CachedAttachment, type CacheRead } from "../host/cache.js";
import { type Liveness, mayGo } from "../host/liveness.js";
import { type CachedMapping, cachedMappings, ourConf, portmapBackendOf } from "../pipeline/attachment.js";
import { nodeAddresses } from "../policy/resolve.js";

export const STATES = ["scoped", "unscoped", "captures-service", "conflict", "orphan", "closed"] as const;
export type State = (typeof STATES)[number];

export interface StatusRow {
  family: Family;
  /** namespace/name from the cached CNI_ARGS, else the container ID, else "?" (an unattributable chain). */
  pod: string;
  network: string | null;
  containerId: string | null;
  /** Where the rules are: the pod's iptables chain, or `ip cni_hostport hostports` / `ip6 …` (nftables). */
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
  /** False when nothing leads traffic to the rules (no CNI-HOSTPORT-DNAT jump to the chain; nftables: never). */
  reachable: boolean;
  /** Whose table the rules are in: "iptables-legacy", "iptables-nft", "iptables" (the one on PATH), "nftables". */
  backend: string;
  /** Why a closed mapping answers on no address; null for every other state. */
  reason: string | null;
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

function podSubnetsOf(pods: readonly HeldPod[], cache: CacheRead): Cidr[] {
  const fromResults = cache.attachments.flatMap((a) =>
    ((a.result?.["ips"] ?? []) as Array<{ address?: unknown }>).map((ip) => String(ip.address ?? "")),
  );
  const hairpins = pods.flatMap((p) => p.rules.map((r) => sourceOf(r) ?? ""));
  return [...new Set([...fromResults, ...hairpins])].flatMap((text) => {
    const c = parseCidr(text);
    // A pod address with its prefix names the subnet; 127.0.0.1/32 (the localhost mark) is none.
    return c && !(c.family === 4 ? c.text.endsWith("/32") : c.text.endsWith("/128")) ? [c] : [];
  });
}

/**
 * The rows of every mapping of every backend's pods (portmap's iptables backend: one chain per pod; its
 * nftables backend: each family's `hostports` rules, the pod's by their container-ID comment). A pod no live
 * attachment owns (liveness.ts: dead, or deleting) is an orphan; nothing is one without a result cache. A live
 * pod's mapping whose rules match no address (none left, or only 127.0.0.1) is closed, with the reason; `managed`
 * is the installed conflist, whose entry scopes its network's pods whose cached conflist lacks ours (the keeper's).
 */
export function status(
  read: readonly NodeRules[],
  cache: CacheRead,
  network: NodeNetwork,
  verdict: Liveness,
  managed?: ManagedList,
): StatusRow[] {
  const held = read.map((r) => ({ rules: r, pods: r.pods() }));
  const subnets = podSubnetsOf(
    held.flatMap((h) => h.pods),
    cache,
  );
  const rows: Ranked[] = [];
  for (const { rules, pods } of held) {
    // The first attachment with the backend's key for a pod owns its rules.
    const byKey = new Map<string, CachedAttachment>();
    for (const a of cache.attachments) {
      const key = rules.keyOf({ network: a.network, containerId: a.containerId });
      if (!byKey.has(key)) byKey.set(key, a);
    }
    for (const p of pods) {
      const attachment = byKey.get(p.key);
      const owner: Owner = attachment
        ? {
            pod: attachmentLabel(attachment),
            network: attachment.network,
            containerId: attachment.containerId,
            attachment,
          }
        : {
            pod: p.owner?.containerId ?? "?",
            network: p.owner?.network ?? null,
            containerId: p.owner?.containerId ?? null,
            attachment: undefined,
          };
      const orphan =
        cache.present && !attachment && (p.owner === undefined || mayGo(verdict(p.owner.network, p.owner.containerId)));
      for (const m of mappingsOf(p.rules)) {
        const captures = m.destinations.length === 0 ? capturedAddresses(p.family, owner, network, subnets) : [];
        const state: State = orphan
          ? "orphan"
          : m.destinations.length > 0
            ? "scoped"
            : captures.length > 0
              ? "captures-service"
              : "unscoped";
        rows.push({
          family: p.family,
          pod: owner.pod,
          network: owner.network,
          containerId: owner.containerId,
          chain: p.place,
          protocol: m.protocol,
          hostPort: m.hostPort,
          destinations: m.destinations,
          target: m.target,
          state,
          captures,
          winner: null,
          reachable: p.reachable,
          backend: rules.backend.name,
          reason: null,
          rank: p.rank(m.order),
        });
      }
    }
  }
  // Two pods claiming the same address:port: the one whose rules see the packet first takes it. Only rows of
  // one family, protocol and port can be rivals (the keeper does this at every pass: no row meets every other).
  const byPort = new Map<string, Ranked[]>();
  for (const row of rows.filter((r) => r.reachable)) {
    const key = `${row.family}/${row.protocol}/${row.hostPort}`;
    byPort.set(key, [...(byPort.get(key) ?? []), row]);
  }
  for (const row of rows) {
    if (!row.reachable) continue;
    const rivals = (byPort.get(`${row.family}/${row.protocol}/${row.hostPort}`) ?? []).filter(
      (o) => (o.chain !== row.chain || o.containerId !== row.containerId) && overlaps(o.destinations, row.destinations),
    );
    if (rivals.length === 0) continue;
    const winner = [row, ...rivals].sort((a, b) => a.rank[0] - b.rank[0] || a.rank[1] - b.rank[1])[0] as StatusRow;
    row.winner = winner.pod;
    if (row.state !== "orphan") row.state = "conflict";
  }
  rows.push(...closedRows(rows, read, cache, network, verdict, managed));
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

type Ranked = StatusRow & { rank: readonly [number, number] };

// The keeper reads the same parsed attachments pass after pass (its cache memo): their mappings are computed
// again only when the node's network or the managed conflist changed.
const memo = new WeakMap<CachedAttachment, { inputs: string; mappings: CachedMapping[] }>();
function memoMappings(a: CachedAttachment, inputs: string, compute: () => CachedMapping[]): CachedMapping[] {
  const known = memo.get(a);
  if (known?.inputs === inputs) return known.mappings;
  const mappings = compute();
  memo.set(a, { inputs, mappings });
  return mappings;
}

/**
 * Marks closed the rows of live pods' mappings that answer on no address from outside the node, and adds a row per
 * family for such a mapping's rules that are not there at all (a default that left no address drops them).
 */
function closedRows(
  rows: Ranked[],
  read: readonly NodeRules[],
  cache: CacheRead,
  network: NodeNetwork,
  verdict: Liveness,
  managed: ManagedList | undefined,
): Ranked[] {
  // Loopback takes no traffic from outside; a backend's never-matching destination takes none at all.
  const nowhere = new Set(["127.0.0.1", ...read.flatMap((r) => Object.values(r.backend.closedDestination ?? {}))]);
  const answers = (row: StatusRow) => row.destinations.length === 0 || row.destinations.some((d) => !nowhere.has(d));
  const added: Ranked[] = [];
  const owned = new Map<string, Ranked[]>();
  for (const row of rows) {
    const key = `${row.network}\n${row.containerId}`;
    owned.set(key, [...(owned.get(key) ?? []), row]);
  }
  const inputs = JSON.stringify([network, managed ?? null]);
  for (const a of cache.attachments) {
    if (verdict(a.network, a.containerId) !== "live") continue;
    let mappings: CachedMapping[];
    try {
      mappings = memoMappings(a, inputs, () => cachedMappings(a, network, fallbackEntry(managed, a)));
    } catch {
      continue; // an entry no rules can be computed from: reconcile and the keeper say why
    }
    const pod = { network: a.network, containerId: a.containerId };
    const holder = read.find((r) => r.holds(pod)) ?? read.find((r) => r.backend.kind === portmapBackendOf(a));
    const mine = owned.get(`${a.network}\n${a.containerId}`) ?? [];
    for (const { mapping, targets, closedBy } of mappings) {
      const { protocol, hostPort } = mapping;
      const same = (r: StatusRow, family: Family, target: string) =>
        r.family === family && r.protocol === protocol && r.hostPort === hostPort && r.target === target;
      const held = mine.filter((r) => targets.some((t) => same(r, t.family, t.target)));
      if (held.some(answers)) continue;
      const reason =
        closedBy ??
        (held.length === 0
          ? "its rules are missing"
          : `its rules match only ${held.flatMap((r) => r.destinations).join(", ")}, though the policy gives it addresses now`);
      for (const r of held.filter((r) => r.state !== "orphan")) Object.assign(r, { state: "closed", reason });
      // The runtime's hostIP of a family the pod lacks: portmap wrote nothing, and there is no pod address to name.
      const missing =
        targets.length === 0 && mapping.hostIp ? [{ family: mapping.hostIp.family, target: "" }] : targets;
      for (const { family, target } of missing) {
        if (!holder?.families.includes(family) || [...mine, ...added].some((r) => same(r, family, target))) continue;
        added.push({
          family,
          pod: attachmentLabel(a),
          network: a.network,
          containerId: a.containerId,
          chain: holder.backend.where(family, pod),
          protocol,
          hostPort,
          destinations: [],
          target,
          state: "closed",
          captures: [],
          winner: null,
          reachable: false,
          backend: holder.backend.name,
          reason,
          rank: [Number.POSITIVE_INFINITY, 0],
        });
      }
    }
  }
  return added;
}

/**
 * A node whose two iptables variants both hold hostPort rules: portmap reads and deletes in one of them only (the
 * one its runtime's `iptables` is), so the other's are left over, or another writer's.
 */
export function variantWarnings(read: readonly NodeRules[]): string[] {
  const holding = read.filter((r) => r.backend.variant !== undefined && r.pods().length > 0);
  if (holding.length < 2) return [];
  return [
    `${holding.map((r) => r.backend.name).join(" and ")} both hold hostPort rules: portmap reads and deletes them in one only, the one the node's CNI plugins run (the TABLE column says which rows are where)`,
  ];
}
