// The nat rules Debian's portmap (1.1.1) writes for one pod, as rules that print as `iptables -S` prints them:
// ADD swaps them for the scoped ones without reading them first, reconcile rebuilds them without running
// portmap. Checked byte for byte against real portmap output (test/fixtures/ops, recorded by record.sh).
// portmap 1.1.1 has no masqAll option; it is ignored as there.
import * as z from "zod/mini";
import type { PortMapping } from "../core/config.js";
import { type Family, hostCidr, networkOf, parseCidr, parseIp } from "../core/ip.js";
import { addressMatch, type Match, type Rule, ruleKey } from "../core/rule.js";
import { DNAT_CHAIN, MASQ_CHAIN, SETMARK_CHAIN } from "./table.js";
import { parseRule } from "./text.js";

export interface PortmapOptions {
  snat: boolean;
  markMasqBit: number;
  externalSetMarkChain: string | undefined;
  conditions: Record<Family, string[]>;
}

// Tokens end up in iptables-restore lines: one word each, nothing that could start another command.
const WORD = /^[^\s"'\\]{1,256}$/;
const CHAIN = /^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,27}$/;
const MAX_MULTIPORT = 15;
const MAX_COMMENT = 255;

/** portmap's options when its entry sets none. */
export const PORTMAP_DEFAULTS: PortmapOptions = {
  snat: true,
  markMasqBit: 13,
  externalSetMarkChain: undefined,
  conditions: { 4: [], 6: [] },
};

const OptionsSchema = z.looseObject({
  snat: z.optional(z.nullable(z.boolean())),
  markMasqBit: z.optional(z.nullable(z.int())),
  externalSetMarkChain: z.optional(z.nullable(z.string())),
  conditionsV4: z.optional(z.nullable(z.array(z.string()))),
  conditionsV6: z.optional(z.nullable(z.array(z.string()))),
});

/** portmap's options from its conflist entry, validated as portmap does (and safe to put in a restore payload). */
export function parsePortmapOptions(entry: unknown): PortmapOptions {
  const parsed = z.safeParse(OptionsSchema, entry);
  if (!parsed.success)
    throw new Error(`portmap entry: ${parsed.error.issues[0]?.path.join(".")}: ${parsed.error.issues[0]?.message}`);
  const o = parsed.data;
  if (o.markMasqBit != null && o.externalSetMarkChain != null)
    throw new Error("portmap entry: cannot specify externalSetMarkChain and markMasqBit");
  const bit = o.markMasqBit ?? PORTMAP_DEFAULTS.markMasqBit;
  if (bit < 0 || bit > 31) throw new Error("portmap entry: markMasqBit must be between 0 and 31");
  if (o.externalSetMarkChain != null && !CHAIN.test(o.externalSetMarkChain)) {
    throw new Error(
      `portmap entry: externalSetMarkChain ${JSON.stringify(o.externalSetMarkChain)} is not a chain name`,
    );
  }
  for (const token of [...(o.conditionsV4 ?? []), ...(o.conditionsV6 ?? [])]) {
    if (!WORD.test(token))
      throw new Error(`portmap entry: condition ${JSON.stringify(token)} is not a single iptables word`);
  }
  return {
    snat: o.snat ?? PORTMAP_DEFAULTS.snat,
    markMasqBit: bit,
    externalSetMarkChain: o.externalSetMarkChain ?? undefined,
    conditions: { 4: o.conditionsV4 ?? [], 6: o.conditionsV6 ?? [] },
  };
}

/** The pod address portmap forwards to, from the result's `address/prefix`. */
export interface PodNet {
  family: Family;
  ip: string;
  /** The prefix's network, e.g. 10.244.1.0/24: the hairpin source. */
  subnet: string;
}

export function podNet(address: string): PodNet | undefined {
  const cidr = parseCidr(address);
  if (!cidr) return undefined;
  return {
    family: cidr.family,
    ip: cidr.text.split("/")[0] as string,
    subnet: networkOf(cidr),
  };
}

const markDef = (bit: number): string => {
  const v = `0x${(2 ** bit).toString(16)}`;
  return `${v}/${v}`;
};

/**
 * The rules of the pod chain, in portmap's order: per mapping hairpin mark, localhost mark (IPv4), DNAT; a rule
 * equal to an earlier one (the marks of two mappings of one port) once, as portmap appends only missing rules.
 */
/** Where portmap's DNAT sends a mapping: `ip:port`, `[ip6]:port`. */
export const dnatTo = (pod: PodNet, port: number): string => `${pod.family === 4 ? pod.ip : `[${pod.ip}]`}:${port}`;

export function portmapChainRules(
  chain: string,
  pod: PodNet,
  mappings: readonly PortMapping[],
  o: PortmapOptions,
): Rule[] {
  const mark = { kind: "jump", chain: o.externalSetMarkChain ?? SETMARK_CHAIN } as const;
  const seen = new Set<string>();
  const all = mappings.flatMap((m) => {
    if (m.hostIp && m.hostIp.family !== pod.family) return [];
    const unspecified = m.hostIp?.text === "0.0.0.0" || m.hostIp?.text === "::";
    const d = m.hostIp && !unspecified ? { destination: addressMatch(m.hostIp.text) } : {};
    const matches = (): Match[] => [
      { kind: "protocol", protocol: m.protocol },
      { kind: "dport", protocol: m.protocol, port: m.hostPort },
    ];
    const rules: Rule[] = o.snat
      ? [{ chain, source: addressMatch(pod.subnet), ...d, matches: matches(), target: mark }]
      : [];
    if (o.snat && pod.family === 4)
      rules.push({ chain, source: addressMatch("127.0.0.1"), ...d, matches: matches(), target: mark });
    rules.push({ chain, ...d, matches: matches(), target: { kind: "dnat", to: dnatTo(pod, m.containerPort) } });
    return rules;
  });
  return all.filter((r) => !seen.has(ruleKey(r)) && seen.add(ruleKey(r)));
}

/** portmap cuts its comment to 255 characters as `…253 + "..."`; iptables keeps 255 of those. */
function comment(network: string, containerId: string): string {
  const full = `dnat name: "${network}" id: "${containerId}"`;
  const cut = full.length <= MAX_COMMENT ? full : `${full.slice(0, 253)}...`;
  return `"${cut.slice(0, MAX_COMMENT).replace(/["\\]/g, "\\$&")}"`;
}

const HOISTED: ReadonlyArray<[string[], string]> = [
  [["-s", "--source", "--src"], "-s"],
  [["-d", "--destination", "--dst"], "-d"],
  [["-i", "--in-interface"], "-i"],
  [["-o", "--out-interface"], "-o"],
];

function canonicalAddress(value: string, family: Family): string {
  if (value.includes("/")) return parseCidr(value)?.text ?? value;
  const ip = parseIp(value);
  return ip && ip.family === family ? hostCidr(ip) : value;
}

/**
 * portmap's extra conditions as iptables prints them: addresses and interfaces (`[!] -s/-d/-i/-o`) move before
 * `-p`, in that order, with a prefix length; everything else stays after the multiport match as given.
 */
function conditionParts(tokens: readonly string[], family: Family): { front: string[]; rest: string[] } {
  const front = new Map<string, string>();
  const rest: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const negated = tokens[i] === "!";
    const flag = tokens[negated ? i + 1 : i] as string;
    const hoisted = HOISTED.find(([aliases]) => aliases.includes(flag));
    const value = tokens[negated ? i + 2 : i + 1];
    if (!hoisted || value === undefined) {
      rest.push(tokens[i] as string);
      continue;
    }
    const [, canonical] = hoisted;
    const shown = canonical === "-s" || canonical === "-d" ? canonicalAddress(value, family) : value;
    front.set(canonical, `${negated ? "! " : ""}${canonical} ${shown}`);
    i += negated ? 2 : 1;
  }
  return { front: HOISTED.flatMap(([, c]) => (front.has(c) ? [front.get(c) as string] : [])), rest };
}

/**
 * The jumps from CNI-HOSTPORT-DNAT: per protocol (sorted), every host port of it (≤ 15 per rule, in order).
 * portmap's extra conditions are iptables words: the line is assembled as iptables prints it, then read.
 */
export function portmapJumpRules(
  network: string,
  containerId: string,
  chain: string,
  family: Family,
  mappings: readonly PortMapping[],
  o: PortmapOptions,
): Rule[] {
  const byProto = new Map<string, number[]>();
  for (const m of mappings) byProto.set(m.protocol, [...(byProto.get(m.protocol) ?? []), m.hostPort]);
  const { front, rest } = conditionParts(o.conditions[family], family);
  return [...byProto.keys()].sort().flatMap((proto) => {
    const ports = byProto.get(proto) as number[];
    const rules: Rule[] = [];
    for (let i = 0; i < ports.length; i += MAX_MULTIPORT) {
      const spec = ports.slice(i, i + MAX_MULTIPORT).join(",");
      rules.push(
        parseRule(
          [
            `-A ${DNAT_CHAIN}`,
            ...front,
            `-p ${proto} -m comment --comment ${comment(network, containerId)} -m multiport --dports ${spec}`,
            ...rest,
            `-j ${chain}`,
          ].join(" "),
        ),
      );
    }
    return rules;
  });
}

/** A rule portmap keeps in a shared chain; `first`: inserted at the top (portmap's POSTROUTING jump). */
export interface SharedRule {
  rule: Rule;
  first?: boolean;
}

/** The shared chains and rules portmap sets up before a pod's own, in its order. */
export function portmapSharedRules(o: PortmapOptions): { chains: string[]; rules: SharedRule[] } {
  const chains: string[] = [];
  const rules: SharedRule[] = [];
  if (o.snat && o.externalSetMarkChain === undefined) {
    const mark = markDef(o.markMasqBit);
    chains.push(SETMARK_CHAIN, MASQ_CHAIN);
    rules.push(
      {
        rule: {
          chain: SETMARK_CHAIN,
          matches: [{ kind: "comment", text: "CNI portfwd masquerade mark" }],
          target: { kind: "mark", mark },
        },
      },
      {
        rule: {
          chain: MASQ_CHAIN,
          matches: [{ kind: "other", text: `-m mark --mark ${mark}` }],
          target: { kind: "masquerade" },
        },
      },
      {
        rule: {
          chain: "POSTROUTING",
          matches: [{ kind: "comment", text: "CNI portfwd requiring masquerade" }],
          target: { kind: "jump", chain: MASQ_CHAIN },
        },
        first: true,
      },
    );
  }
  chains.push(DNAT_CHAIN);
  for (const entry of ["PREROUTING", "OUTPUT"]) {
    rules.push({
      rule: {
        chain: entry,
        matches: [{ kind: "other", text: "-m addrtype --dst-type LOCAL" }],
        target: { kind: "jump", chain: DNAT_CHAIN },
      },
    });
  }
  return { chains, rules };
}
