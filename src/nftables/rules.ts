// portmap's nftables backend (portmap >= 1.6, `"backend": "nftables"`): its per-mapping DNAT rules in chain
// `hostports` of tables `ip cni_hostport` / `ip6 cni_hostport`, as `nft -a -j list chain` prints them, and
// the rewrite that scopes a pod's rules to host IPs as one nft JSON batch. Pure: JSON text in, JSON text out.
//
// A rule of portmap: `[ip daddr HOSTIP] tcp dport 8080 dnat to 10.244.1.5:80 comment "<container ID>"`. The
// comment is the only key portmap's own CHECK (it counts them) and DEL (it deletes them by handle) use, so
// every rule we write carries it.
import { CniError, Code } from "../cni/errors.js";
import type { Family, Ip } from "../policy/ip.js";
import type { FamilyScope } from "../policy/resolve.js";

export const TABLE = "cni_hostport";
export const CHAIN = "hostports";
export const NFT_FAMILY: Record<Family, "ip" | "ip6"> = { 4: "ip", 6: "ip6" };

/** One statement of a rule in nft's JSON (`{"match": …}`, `{"dnat": …}`, …), kept as nft printed it. */
export type Statement = Record<string, unknown>;

export interface NftRule {
  handle: number;
  comment: string | undefined;
  expr: Statement[];
}

/**
 * A destination no packet has, for a mapping left with no host IP in a family: the kernel rewrites a
 * connect() to 0.0.0.0 / :: to the loopback before the nat hooks, and `fib daddr type local` (portmap's jump
 * into `hostports`) takes 0.0.0.0 for broadcast. portmap's CHECK counts the pod's rules per family, so the
 * rule stays, matching nothing (portmap < 0.8.7 wrote `-d 0.0.0.0/32` the same way).
 */
export const NEVER: Record<Family, string> = { 4: "0.0.0.0", 6: "::" };

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

function malformed(what: string): CniError {
  return new CniError(Code.IoFailure, `unexpected output of nft -j list chain: ${what}`);
}

/** The rules of `nft -a -j list chain <family> cni_hostport hostports`, in chain order. */
export function parseChainJson(text: string): NftRule[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw malformed("not JSON");
  }
  const items = isObject(doc) ? doc["nftables"] : undefined;
  if (!Array.isArray(items)) throw malformed('no "nftables" array');
  return items.flatMap((item): NftRule[] => {
    const rule = isObject(item) ? item["rule"] : undefined;
    if (!isObject(rule)) return [];
    const { handle, comment, expr } = rule;
    if (typeof handle !== "number" || !Array.isArray(expr) || !expr.every(isObject)) throw malformed(`rule ${JSON.stringify(rule)}`);
    return [{ handle, comment: typeof comment === "string" ? comment : undefined, expr }];
  });
}

/** A match statement on a payload field: its protocol, field, operator and right side. */
function payloadMatch(s: Statement): { protocol: unknown; field: unknown; op: unknown; right: unknown } | undefined {
  const match = s["match"];
  if (!isObject(match) || !isObject(match["left"])) return undefined;
  const payload = match["left"]["payload"];
  return isObject(payload) ? { protocol: payload["protocol"], field: payload["field"], op: match["op"], right: match["right"] } : undefined;
}

const daddrMatchOf = (s: Statement) => {
  const m = payloadMatch(s);
  return m !== undefined && (m.protocol === "ip" || m.protocol === "ip6") && m.field === "daddr" ? m : undefined;
};
const isDaddr = (s: Statement) => daddrMatchOf(s) !== undefined;

/** The rule's destination address: undefined without a daddr match, null for one that is not `== ADDRESS`. */
function destination(expr: readonly Statement[]): string | undefined | null {
  const m = expr.map(daddrMatchOf).find((x) => x !== undefined);
  if (m === undefined) return undefined;
  return m.op === "==" && typeof m.right === "string" ? m.right : null;
}

/** `<protocol> dport <port>` of the rule. */
export function dportOf(expr: readonly Statement[]): { protocol: string; port: number } | undefined {
  for (const s of expr) {
    const m = payloadMatch(s);
    if (m && m.op === "==" && m.field === "dport" && typeof m.protocol === "string" && typeof m.right === "number") return { protocol: m.protocol, port: m.right };
  }
  return undefined;
}

/** `dnat to` of the rule as `ip:port` / `[ip6]:port`. */
export function dnatOf(expr: readonly Statement[]): string | undefined {
  const dnat = expr.find((s) => isObject(s["dnat"]))?.["dnat"] as Record<string, unknown> | undefined;
  if (!dnat || typeof dnat["addr"] !== "string" || typeof dnat["port"] !== "number") return undefined;
  return dnat["addr"].includes(":") ? `[${dnat["addr"]}]:${dnat["port"]}` : `${dnat["addr"]}:${dnat["port"]}`;
}

/** The match portmap writes for a hostIP: `ip daddr X` / `ip6 daddr X`, first in the rule. */
function daddrMatch(family: Family, address: string): Statement {
  return { match: { op: "==", left: { payload: { protocol: NFT_FAMILY[family], field: "daddr" } }, right: address } };
}

/** The rules of one container (their comment is its ID). */
export const podRules = (rules: readonly NftRule[], containerId: string): NftRule[] => rules.filter((r) => r.comment === containerId);

function belongsTo(rule: NftRule, scope: FamilyScope, foreign: ReadonlySet<string>): boolean {
  const port = dportOf(rule.expr);
  if (port?.protocol !== scope.protocol || port.port !== scope.hostPort) return false;
  const d = destination(rule.expr);
  return d === undefined || (d !== null && !foreign.has(d));
}

/** One mapping's rules replaced in place: `exprs` go where `anchor` is, the `drop` rules go. */
export interface Rewrite {
  family: Family;
  anchor: number;
  drop: number[];
  exprs: Statement[][];
}

export interface ScopedHostports {
  rewrites: Rewrite[];
  /** Scopes with host IPs whose mapping has no rule of this pod in the chain. */
  missing: FamilyScope[];
}

/**
 * Scopes one family's `hostports` rules of a pod. Each scope's rules (same protocol and port, no destination
 * or one that is not a runtime-scoped sibling's), stripped of their destination, are its templates (in
 * order, each once); the templates are repeated with `ip daddr` for every host IP (the NEVER address for
 * none) at the place of the mapping's first rule. A mapping whose rules are that already needs no rewrite,
 * so applying the rewrite to its own result, or to it plus portmap's re-appended rules, ends the same.
 */
export function scopeHostports(rules: readonly NftRule[], containerId: string, family: Family, scopes: readonly FamilyScope[]): ScopedHostports {
  const mine = podRules(rules, containerId);
  const rewrites: Rewrite[] = [];
  const missing: FamilyScope[] = [];
  for (const scope of scopes) {
    const foreign = new Set(scope.foreign.map((ip) => ip.text));
    const owned = mine.filter((r) => belongsTo(r, scope, foreign));
    const first = owned[0];
    if (!first) {
      if (scope.ips.length > 0) missing.push(scope);
      continue;
    }
    const templates = new Map(owned.map((r) => r.expr.filter((s) => !isDaddr(s))).map((t) => [JSON.stringify(t), t]));
    const ips: readonly Ip[] = scope.ips.length > 0 ? scope.ips : [{ family, text: NEVER[family] }];
    const exprs = ips.flatMap((ip) => [...templates.values()].map((t) => [daddrMatch(family, ip.text), ...t]));
    const same = owned.length === exprs.length && owned.every((r, i) => JSON.stringify(r.expr) === JSON.stringify(exprs[i]));
    if (!same) rewrites.push({ family, anchor: first.handle, drop: owned.slice(1).map((r) => r.handle), exprs });
  }
  return { rewrites, missing };
}

/** The pod's rules after the rewrites, in chain order (for CHECK's message and the conntrack step). */
export function applyRewrites(rules: readonly NftRule[], rewrites: readonly Rewrite[]): Statement[][] {
  return rules.flatMap((r) => {
    const at = rewrites.find((w) => w.anchor === r.handle);
    if (at) return at.exprs;
    return rewrites.some((w) => w.drop.includes(r.handle)) ? [] : [r.expr];
  });
}

/**
 * One `nft -j -f -` batch (one netlink transaction: all of it or nothing) for the rewrites of both
 * families: per rewrite, every new rule but the last inserted before the anchor, the anchor replaced by the
 * last (it keeps its handle and place), the rest of the mapping's old rules deleted by handle.
 */
export function rewriteBatch(containerId: string, rewrites: readonly Rewrite[]): string {
  const commands = rewrites.flatMap((w) => {
    const at = { family: NFT_FAMILY[w.family], table: TABLE, chain: CHAIN };
    const rule = (expr: Statement[]) => ({ ...at, handle: w.anchor, comment: containerId, expr });
    const last = w.exprs[w.exprs.length - 1] as Statement[];
    return [
      ...w.exprs.slice(0, -1).map((expr) => ({ insert: { rule: rule(expr) } })),
      { replace: { rule: rule(last) } },
      ...w.drop.map((handle) => ({ delete: { rule: { ...at, handle } } })),
    ];
  });
  return JSON.stringify({ nftables: commands });
}

/** The UDP DNAT rules per host port (the conntrack step's view of a chain), in order. */
export function udpDnats(exprs: readonly Statement[][]): Map<number, Array<{ destination: string | undefined; target: string }>> {
  const out = new Map<number, Array<{ destination: string | undefined; target: string }>>();
  for (const expr of exprs) {
    const port = dportOf(expr);
    const target = dnatOf(expr);
    const d = destination(expr);
    if (port?.protocol !== "udp" || !target || d === null) continue;
    out.set(port.port, [...(out.get(port.port) ?? []), { destination: d, target }]);
  }
  return out;
}

/** Text of a rule, close to `nft list`'s, for messages. */
export function describeRule(expr: readonly Statement[]): string {
  const port = dportOf(expr);
  const d = destination(expr);
  const dnat = dnatOf(expr);
  if (!port || !dnat || d === null) return JSON.stringify(expr);
  return `${d === undefined ? "" : `daddr ${d} `}${port.protocol} dport ${port.port} dnat to ${dnat}`;
}
