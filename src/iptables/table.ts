// The whole nat table as `iptables -t nat -S` prints it, and portmap's part of it: per-pod chains, the jumps
// to them in CNI-HOSTPORT-DNAT and whom they belong to. Pure: text in, rules out.
import { commentOf, jumpOf, type Rule } from "../core/rule.js";
import { portmapChainName } from "./chain-name.js";
import { parseRule } from "./text.js";

export const DNAT_CHAIN = "CNI-HOSTPORT-DNAT";
export const SETMARK_CHAIN = "CNI-HOSTPORT-SETMARK";
export const MASQ_CHAIN = "CNI-HOSTPORT-MASQ";
export const POD_CHAIN_PREFIX = "CNI-DN-";

export interface NatTable {
  /** Every chain, built-in and user-defined. */
  chains: Set<string>;
  /** The rules of each chain, in order. */
  rules: Map<string, Rule[]>;
}

export function parseTable(text: string): NatTable {
  const table: NatTable = { chains: new Set(), rules: new Map() };
  for (const line of text.split("\n")) {
    const [verb, chain] = line.split(" ", 2);
    if (!chain) continue;
    if (verb === "-P" || verb === "-N") table.chains.add(chain);
    else if (verb === "-A") {
      table.chains.add(chain);
      const rule = parseRule(line);
      printed.set(rule, line);
      const rules = table.rules.get(chain);
      if (rules) rules.push(rule);
      else table.rules.set(chain, [rule]);
    }
  }
  return table;
}

// The line each parsed rule came from: comparing it with a formatted rule is much cheaper than ruleKey.
const printed = new WeakMap<Rule, string>();

/** The `-A …` line `rule` was parsed from by parseTable, if it was. */
export const printedLine = (rule: Rule): string | undefined => printed.get(rule);

export function rulesOf(table: NatTable, chain: string): Rule[] {
  return table.rules.get(chain) ?? [];
}

export interface PortmapJump {
  /** The rule in CNI-HOSTPORT-DNAT. */
  rule: Rule;
  /** Its position in CNI-HOSTPORT-DNAT: earlier jumps win. */
  index: number;
  chain: string;
  /** From the comment, when it names a network and container whose chain name is the jump's target. */
  owner: { network: string; containerId: string } | undefined;
}

// portmap's comment: dnat name: "<network>" id: "<containerID>" (cut to 255 characters for long names).
const COMMENT = /^dnat name: "(.*)" id: "([a-zA-Z0-9][a-zA-Z0-9_.-]*)"$/;

/**
 * Every CNI-HOSTPORT-DNAT rule that jumps to a portmap pod chain. The owner is taken from the comment only when
 * portmapChainName(network, id) is the target: a comment that was cut, edited or copied attributes nothing.
 */
export function portmapJumps(table: NatTable): PortmapJump[] {
  return rulesOf(table, DNAT_CHAIN).flatMap((rule, index) => {
    const chain = jumpOf(rule);
    if (!chain?.startsWith(POD_CHAIN_PREFIX)) return [];
    const comment = commentOf(rule);
    const m = comment === undefined ? null : COMMENT.exec(comment);
    const owner =
      m && portmapChainName(m[1] as string, m[2] as string) === chain
        ? { network: m[1] as string, containerId: m[2] as string }
        : undefined;
    return [{ rule, index, chain, owner }];
  });
}

/** portmap's per-pod chains present in the table. */
export function podChains(table: NatTable): string[] {
  return [...table.chains].filter((c) => c.startsWith(POD_CHAIN_PREFIX));
}

/** Rules outside CNI-HOSTPORT-DNAT that jump to `chain` (someone else's references). */
export function foreignReferences(table: NatTable, chain: string): Rule[] {
  return [...table.rules].flatMap(([from, rules]) =>
    from === DNAT_CHAIN ? [] : rules.filter((r) => jumpOf(r) === chain),
  );
}
