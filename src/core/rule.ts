// A NAT rule as data, the same for every backend: the parts this plugin reads or changes are typed, anything
// else is opaque backend text kept in order. Readers and writers (iptables/text.ts, nftables/json.ts) are the
// only places that know how a backend prints a rule: where the destination goes, the /32 suffix, quoting.

/** `-s`/`-d` (iptables), `ip saddr`/`ip6 daddr` (nft). A host address has no prefix; a network keeps its /N. */
export interface AddressMatch {
  address: string;
  negated: boolean;
}

export type Match =
  /** `-p tcp`; in nft implied by a dport match. */
  | { kind: "protocol"; protocol: string }
  /** `-m tcp --dport 80` / `tcp dport 80`. */
  | { kind: "dport"; protocol: string; port: number }
  /** `-m comment --comment "x"` / `comment "x"`: the text, unquoted. */
  | { kind: "comment"; text: string }
  /** Anything else, as the backend prints it. */
  | { kind: "other"; text: string };

export type Target =
  /** `-j DNAT --to-destination 10.244.1.5:80` / `dnat to 10.244.1.5:80` (IPv6 in brackets). */
  | { kind: "dnat"; to: string }
  /** `-j CHAIN` / `jump chain`. */
  | { kind: "jump"; chain: string }
  | { kind: "masquerade" }
  /** `-j MARK --set-xmark 0x2000/0x2000`. */
  | { kind: "mark"; mark: string }
  | { kind: "other"; text: string }
  /** A rule without target (counts only). */
  | { kind: "none" };

export interface Rule {
  chain: string;
  source?: AddressMatch;
  destination?: AddressMatch;
  /** Every other match, in the order the backend prints them. */
  matches: Match[];
  target: Target;
  /** nft's rule handle; iptables rules have none. */
  handle?: number;
}

/** An address match; a full-length prefix (/32, /128) is dropped, as the model keeps host addresses bare. */
export function addressMatch(text: string, negated = false): AddressMatch {
  const full = text.includes(":") ? "/128" : "/32";
  return { address: text.endsWith(full) ? text.slice(0, -full.length) : text, negated };
}

/** The rule's protocol: its `-p`, else the protocol of its dport match. */
export function protocolOf(rule: Rule): string | undefined {
  for (const m of rule.matches) if (m.kind === "protocol" || m.kind === "dport") return m.protocol;
  return undefined;
}

export function dportOf(rule: Rule): number | undefined {
  const m = rule.matches.find((x) => x.kind === "dport");
  return m?.kind === "dport" ? m.port : undefined;
}

/** "tcp/8080" for each port the rules' DNATs take. */
export function takenPorts(rules: readonly Rule[]): Set<string> {
  return new Set(
    rules.filter((r) => dnatOf(r) !== undefined).map((r) => `${protocolOf(r) ?? "?"}/${dportOf(r) ?? "?"}`),
  );
}

export function commentOf(rule: Rule): string | undefined {
  const m = rule.matches.find((x) => x.kind === "comment");
  return m?.kind === "comment" ? m.text : undefined;
}

/** The address a destination match names; undefined when it has none or a negated one. */
export const destinationOf = (rule: Rule): string | undefined =>
  rule.destination && !rule.destination.negated ? rule.destination.address : undefined;

/** The address a source match names; undefined when it has none or a negated one. */
export const sourceOf = (rule: Rule): string | undefined =>
  rule.source && !rule.source.negated ? rule.source.address : undefined;

/** The DNAT target address (`ip:port`, `[ip6]:port`); undefined for any other target. */
export function dnatOf(rule: Rule): string | undefined {
  return rule.target.kind === "dnat" ? rule.target.to : undefined;
}

/** The chain a rule jumps to; undefined for any other target. */
export function jumpOf(rule: Rule): string | undefined {
  return rule.target.kind === "jump" ? rule.target.chain : undefined;
}

/** The rule with its destination match set to `address`, or removed. */
export function withDestination(rule: Rule, address: string | undefined): Rule {
  const { destination: _old, ...rest } = rule;
  return address === undefined ? rest : { ...rule, destination: { address, negated: false } };
}

const addressKey = (a: AddressMatch | undefined) => (a ? [a.address, a.negated] : null);

function matchKey(m: Match): unknown[] {
  switch (m.kind) {
    case "protocol":
      return [m.kind, m.protocol];
    case "dport":
      return [m.kind, m.protocol, m.port];
    case "comment":
    case "other":
      return [m.kind, m.text];
  }
}

function targetKey(t: Target): unknown[] {
  switch (t.kind) {
    case "dnat":
      return [t.kind, t.to];
    case "jump":
      return [t.kind, t.chain];
    case "mark":
      return [t.kind, t.mark];
    case "other":
      return [t.kind, t.text];
    case "masquerade":
    case "none":
      return [t.kind];
  }
}

/** The rule as a comparable key: every part but the handle, independent of how the objects were built. */
export function ruleKey(rule: Rule): string {
  return JSON.stringify([
    rule.chain,
    addressKey(rule.source),
    addressKey(rule.destination),
    rule.matches.map(matchKey),
    targetKey(rule.target),
  ]);
}

export const sameRule = (a: Rule, b: Rule): boolean => ruleKey(a) === ruleKey(b);

/** Same rules in the same order: a chain that needs no write. */
export const sameRules = (a: readonly Rule[], b: readonly Rule[]): boolean =>
  a.length === b.length && a.every((rule, i) => sameRule(rule, b[i] as Rule));
