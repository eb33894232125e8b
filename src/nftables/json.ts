// The nftables edge of the rule model: portmap's nftables backend (portmap >= 1.6, `"backend": "nftables"`)
// keeps every pod's DNAT rules in chain `hostports` of tables `ip cni_hostport` / `ip6 cni_hostport`, one
// rule per mapping: `[ip daddr HOSTIP] tcp dport 8080 dnat to 10.244.1.5:80 comment "<container ID>"`. The
// comment is the only key portmap's own CHECK (it counts the pod's rules per family) and DEL (it deletes them
// by handle) use, so every rule written here carries it.
//
// nft's JSON both ways: `nft -a -j list chain` in, one JSON batch out. Statements the model does not type
// stay opaque JSON and are written back exactly as nft printed them; nothing is parsed from nft's text.
// Just over 300 lines: both directions of one format, which must change together.

import { CniError, Code } from "../core/errors.js";
import type { Family } from "../core/ip.js";
import { addressMatch, commentOf, type Match, type Rule, sameRule, type Target } from "../core/rule.js";

export const TABLE = "cni_hostport";
export const CHAIN = "hostports";
/** portmap's hairpin and localhost masquerade rules, keyed by the same comment. */
export const MASQ_CHAIN = "masquerading";
export const NFT_FAMILY: Record<Family, "ip" | "ip6"> = { 4: "ip", 6: "ip6" };

/** How messages name a family's `hostports` chain. */
export const hostportsPlace = (family: Family): string => `nftables chain ${NFT_FAMILY[family]} ${TABLE} ${CHAIN}`;

/**
 * A destination no packet has, for a mapping left with no host IP in a family: the kernel turns a connect()
 * to 0.0.0.0 / :: into one to the loopback before the nat hooks, and `fib daddr type local` (portmap's jump
 * into `hostports`) takes 0.0.0.0 for broadcast. portmap's CHECK counts the pod's rules per family, so the
 * rule stays, matching nothing (portmap < 0.8.7 wrote `-d 0.0.0.0/32` the same way).
 */
export const NEVER: Record<Family, string> = { 4: "0.0.0.0", 6: "::" };

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => v !== null && typeof v === "object" && !Array.isArray(v);
const L4 = ["tcp", "udp", "sctp"];

function malformed(what: string, cause?: unknown): CniError {
  return new CniError(Code.IoFailure, `unexpected output of nft -j list chain: ${what}`, "", { cause });
}

/** A `match` statement on a payload field. */
function payloadMatch(s: Json): { protocol: unknown; field: unknown; op: unknown; right: unknown } | undefined {
  const match = s["match"];
  if (!isObject(match) || !isObject(match["left"]) || !isObject(match["left"]["payload"])) return undefined;
  const payload = match["left"]["payload"];
  return { protocol: payload["protocol"], field: payload["field"], op: match["op"], right: match["right"] };
}

function targetOf(s: Json): Target | undefined {
  const [key, value] = Object.entries(s)[0] ?? [];
  if (
    key === "dnat" &&
    isObject(value) &&
    Object.keys(value).length === 2 &&
    typeof value["addr"] === "string" &&
    typeof value["port"] === "number"
  ) {
    return {
      kind: "dnat",
      to: value["addr"].includes(":") ? `[${value["addr"]}]:${value["port"]}` : `${value["addr"]}:${value["port"]}`,
    };
  }
  if (key === "jump" && isObject(value) && typeof value["target"] === "string")
    return { kind: "jump", chain: value["target"] };
  if (key === "masquerade" && value === null) return { kind: "masquerade" };
  return undefined;
}

/** One rule of nft's JSON listing in the rule model. */
function readRule(rule: Json): Rule {
  const { chain, handle, comment, expr } = rule;
  if (typeof chain !== "string" || typeof handle !== "number" || !Array.isArray(expr) || !expr.every(isObject))
    throw malformed(`rule ${JSON.stringify(rule)}`);
  const out: Rule = { chain, matches: [], target: { kind: "none" }, handle };
  expr.forEach((s, i) => {
    const m = payloadMatch(s);
    const address =
      m &&
      (m.protocol === "ip" || m.protocol === "ip6") &&
      (m.op === "==" || m.op === "!=") &&
      typeof m.right === "string";
    if (address && m.field === "daddr" && !out.destination)
      out.destination = addressMatch(m.right as string, m.op === "!=");
    else if (address && m.field === "saddr" && !out.source) out.source = addressMatch(m.right as string, m.op === "!=");
    else if (
      m &&
      m.op === "==" &&
      m.field === "dport" &&
      L4.includes(m.protocol as string) &&
      typeof m.right === "number"
    ) {
      out.matches.push({ kind: "dport", protocol: m.protocol as string, port: m.right });
    } else {
      const target = i === expr.length - 1 ? targetOf(s) : undefined;
      if (target) out.target = target;
      else out.matches.push({ kind: "other", text: JSON.stringify(s) });
    }
  });
  if (typeof comment === "string") out.matches.push({ kind: "comment", text: comment });
  return out;
}

/** The rules of `nft -a -j list chain <family> cni_hostport <chain>`, in chain order, with their handles. */
export function parseChainJson(text: string): Rule[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw malformed("not JSON", err);
  }
  const items = isObject(doc) ? doc["nftables"] : undefined;
  if (!Array.isArray(items)) throw malformed('no "nftables" array');
  return items.flatMap((item) => (isObject(item) && isObject(item["rule"]) ? [readRule(item["rule"])] : []));
}

/** The rules of one container: their comment is its ID. */
export const podRules = (rules: readonly Rule[], containerId: string): Rule[] =>
  rules.filter((r) => commentOf(r) === containerId);

// How `nft -j` (jansson, indent 0) writes a listing: `{"nftables": [item, item, …]}`, each rule an item
// `{"rule": {…, "comment": "<text>", …}}`. Inside a string a quote is escaped, so these sequences only ever
// stand where the listing's structure puts them.
const LISTING_START = '{"nftables": [';
const RULE_ITEM = '{"rule": {';

/** One `{"rule": {…}}` item of a listing; undefined when it is not one. */
function ruleItem(text: string): Rule | undefined {
  try {
    const item: unknown = JSON.parse(text);
    return isObject(item) && isObject(item["rule"]) ? readRule(item["rule"]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The rules of one container in `nft -a -j list chain` output, without parsing the others: a chain of a node
 * with a thousand pods is half a megabyte of JSON, and this pod's rules are a few items of it. Output of any
 * other shape is parsed whole.
 */
export function podRulesOfListing(text: string, containerId: string): Rule[] {
  if (!text.startsWith(LISTING_START)) return podRules(parseChainJson(text), containerId);
  const key = `"comment": ${JSON.stringify(containerId)}`;
  const rules: Rule[] = [];
  for (let at = text.indexOf(key); at >= 0; at = text.indexOf(key, at + key.length)) {
    const start = text.lastIndexOf(RULE_ITEM, at);
    const next = text.indexOf(`, ${RULE_ITEM}`, at);
    const rule = start < 0 ? undefined : ruleItem(text.slice(start, next >= 0 ? next : text.lastIndexOf("]}")));
    // The key stood elsewhere than as a rule's comment: the listing is not what this reader expects.
    if (rule === undefined || commentOf(rule) !== containerId) return podRules(parseChainJson(text), containerId);
    rules.push(rule);
  }
  return rules;
}

function addressStatement(family: Family, field: "saddr" | "daddr", a: NonNullable<Rule["destination"]>): Json {
  return {
    match: {
      op: a.negated ? "!=" : "==",
      left: { payload: { protocol: NFT_FAMILY[family], field } },
      right: a.address,
    },
  };
}

function matchStatement(m: Match): Json | undefined {
  switch (m.kind) {
    case "dport":
      return { match: { op: "==", left: { payload: { protocol: m.protocol, field: "dport" } }, right: m.port } };
    case "protocol":
      return { match: { op: "==", left: { meta: { key: "l4proto" } }, right: m.protocol } };
    case "other":
      return JSON.parse(m.text) as Json;
    case "comment":
      return undefined;
  }
}

function targetStatement(t: Target): Json | undefined {
  switch (t.kind) {
    case "dnat": {
      const [, bracketed, plain, port] = /^(?:\[(.+)\]|([^:]+)):(\d+)$/.exec(t.to) ?? [];
      return { dnat: { addr: bracketed ?? plain, port: Number(port) } };
    }
    case "jump":
      return { jump: { target: t.chain } };
    case "masquerade":
      return { masquerade: null };
    case "other":
      return JSON.parse(t.text) as Json;
    case "mark":
      throw new Error("an iptables MARK target has no nftables form here");
    case "none":
      return undefined;
  }
}

/** A rule as nft's JSON `rule` object: address matches first (where portmap puts `ip daddr`), the comment apart. */
export function writeRule(family: Family, rule: Rule, handle?: number): Json {
  const expr = [
    ...(rule.source ? [addressStatement(family, "saddr", rule.source)] : []),
    ...(rule.destination ? [addressStatement(family, "daddr", rule.destination)] : []),
    ...rule.matches.flatMap((m) => matchStatement(m) ?? []),
    ...[targetStatement(rule.target)].flatMap((s) => s ?? []),
  ];
  const comment = commentOf(rule);
  return {
    family: NFT_FAMILY[family],
    table: TABLE,
    chain: rule.chain,
    ...(handle === undefined ? {} : { handle }),
    ...(comment === undefined ? {} : { comment }),
    expr,
  };
}

/**
 * Which rules of `current` stay: the longest run of them, in order, that `desired` has unchanged (handles
 * aside); for each, the index in `desired` where it stays.
 */
function keptRules(current: readonly Rule[], desired: readonly Rule[]): Map<number, number> {
  // Longest common subsequence (a pod has a few rules per family): lcs(i, j) of current[i..] and desired[j..].
  const width = desired.length + 1;
  const table = new Array<number>((current.length + 1) * width).fill(0);
  const lcs = (i: number, j: number) => table[i * width + j] as number;
  const same = (i: number, j: number) => sameRule(current[i] as Rule, desired[j] as Rule);
  for (let i = current.length - 1; i >= 0; i--) {
    for (let j = desired.length - 1; j >= 0; j--)
      table[i * width + j] = same(i, j) ? lcs(i + 1, j + 1) + 1 : Math.max(lcs(i + 1, j), lcs(i, j + 1));
  }
  const kept = new Map<number, number>();
  // On a tie, pass over a rule of `desired` first: the earliest of equal current rules stays (portmap's
  // re-appended copies are the ones that go).
  for (let i = 0, j = 0; i < current.length && j < desired.length; ) {
    if (same(i, j)) kept.set(i++, j++);
    else if (lcs(i, j + 1) >= lcs(i + 1, j)) j++;
    else i++;
  }
  return kept;
}

/**
 * The commands that turn one family's `current` rules of a pod (read, with handles) into `desired` (the
 * scoping pipeline's output, in order): the rules both have stay; the others of `desired` are inserted where
 * the rules they replace were (before the first of those, else before the next rule that stays, else after
 * the last one); the replaced rules are deleted by handle.
 */
export function rewriteCommands(family: Family, current: readonly Rule[], desired: readonly Rule[]): Json[] {
  const kept = keptRules(current, desired);
  const keptAt = new Map([...kept].map(([i, j]) => [j, i]));
  const commands: Json[] = [];
  let from = 0;
  let pending: Rule[] = [];
  const place = (until: number) => {
    if (pending.length === 0) return;
    const before = current.slice(from, until).find((_, k) => !kept.has(from + k)) ?? current[until];
    if (before) commands.push(...pending.map((r) => ({ insert: { rule: writeRule(family, r, before.handle) } })));
    else {
      // After the last rule that stays: each `add` goes right after it, so the last one first.
      const after = current[from - 1];
      if (!after) throw new Error("rules to write for a pod that has none to replace");
      commands.push(...pending.reverse().map((r) => ({ add: { rule: writeRule(family, r, after.handle) } })));
    }
    pending = [];
  };
  desired.forEach((d, j) => {
    const i = keptAt.get(j);
    if (i === undefined) pending.push(d);
    else {
      place(i);
      from = i + 1;
    }
  });
  place(current.length);
  current.forEach((r, i) => {
    if (!kept.has(i)) commands.push(deleteCommand(family, r));
  });
  return commands;
}

/** The command deleting one rule by handle. */
export const deleteCommand = (family: Family, rule: Rule): Json => ({
  delete: { rule: { family: NFT_FAMILY[family], table: TABLE, chain: rule.chain, handle: rule.handle } },
});

/** One `nft -j` document: one netlink transaction, all of it or nothing. */
export const batch = (commands: readonly Json[]): string => JSON.stringify({ nftables: commands });

/** A rule as nft's text would show it, for messages (opaque statements as their JSON). */
export function describeRule(family: Family, rule: Rule): string {
  const parts = [
    ...(rule.source ? [`${NFT_FAMILY[family]} saddr ${rule.source.negated ? "!= " : ""}${rule.source.address}`] : []),
    ...(rule.destination
      ? [`${NFT_FAMILY[family]} daddr ${rule.destination.negated ? "!= " : ""}${rule.destination.address}`]
      : []),
    ...rule.matches.flatMap((m) =>
      m.kind === "dport" ? [`${m.protocol} dport ${m.port}`] : m.kind === "other" ? [m.text] : [],
    ),
    ...(rule.target.kind === "dnat"
      ? [`dnat to ${rule.target.to}`]
      : rule.target.kind === "none"
        ? []
        : [JSON.stringify(targetStatement(rule.target))]),
  ];
  const comment = commentOf(rule);
  return [...parts, ...(comment === undefined ? [] : [`comment "${comment}"`])].join(" ");
}
