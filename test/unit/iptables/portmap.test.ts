// The portmap rule generator against what real portmap wrote (test/fixtures/ops/record.sh): Debian's 1.1.1 and v1.9.1.
import { describe, expect, it } from "vitest";
import { parseNetConf } from "../../../src/core/config.js";
import type { Family } from "../../../src/core/ip.js";
import { type Rule, sameRule } from "../../../src/core/rule.js";
import { portmapChainName } from "../../../src/iptables/chain-name.js";
import {
  parsePortmapOptions,
  podNet,
  portmapChainRules,
  portmapJumpRules,
  portmapSharedRules,
} from "../../../src/iptables/portmap.js";
import { parseTable, rulesOf } from "../../../src/iptables/table.js";
import { formatRule, parseRule } from "../../../src/iptables/text.js";
import { fixture, lines, PORTMAP_VERSIONS } from "../fixtures.js";

const three = [
  { hostPort: 8080, containerPort: 80, protocol: "tcp", hostIP: "" },
  { hostPort: 8443, containerPort: 443, protocol: "tcp", hostIP: "192.0.2.10" },
  { hostPort: 5353, containerPort: 53, protocol: "udp", hostIP: "0.0.0.0" },
];
const many = [
  ...Array.from({ length: 17 }, (_, i) => ({ hostPort: 9001 + i, containerPort: 1 + i, protocol: "tcp" })),
  { hostPort: 9100, containerPort: 100, protocol: "udp" },
];
// Two mappings of one port: portmap appends their (equal) marks once.
const samePort = [
  { hostPort: 8080, containerPort: 80, protocol: "tcp", hostIP: "" },
  { hostPort: 8080, containerPort: 81, protocol: "tcp", hostIP: "" },
];
const mappingsOf = (raw: object[]) =>
  parseNetConf({ cniVersion: "1.0.0", name: "x", runtimeConfig: { portMappings: raw } }).portMappings;
const pods: Record<Family, string> = { 4: "10.244.1.5/24", 6: "2001:db8:244:1::5/64" };

/** Everything portmap wrote for one pod, generated: shared rules, pod chain, jumps — as a table. */
function generated(
  name: string,
  id: string,
  family: Family,
  options: object,
  raw: object[],
): { chain: string; rules: Map<string, string[]> } {
  const o = parsePortmapOptions({ type: "portmap", ...options });
  const chain = portmapChainName(name, id);
  const mappings = mappingsOf(raw);
  const rules = new Map<string, string[]>();
  const add = (c: string, r: string) => rules.set(c, [...(rules.get(c) ?? []), r]);
  for (const s of portmapSharedRules(o).rules) add(s.rule.chain, lines([s.rule])[0]!);
  for (const r of lines(portmapChainRules(chain, podNet(pods[family])!, mappings, o))) add(chain, r);
  for (const r of lines(portmapJumpRules(name, id, chain, family, mappings, o))) add("CNI-HOSTPORT-DNAT", r);
  return { chain, rules };
}

const cases: Array<[string, object, object[], string?]> = [
  ["nosnat", { snat: false }, three],
  ["setmark", { externalSetMarkChain: "KUBE-MARK-MASQ" }, three],
  ["markbit", { markMasqBit: 5 }, three],
  [
    "conditions",
    {
      conditionsV4: ["!", "-s", "198.51.100.0/24", "-m", "addrtype", "--dst-type", "LOCAL"],
      conditionsV6: ["!", "-i", "cni0"],
    },
    three,
  ],
  ["many", {}, many],
  ["longname", {}, [{ hostPort: 8080, containerPort: 80, protocol: "tcp", hostIP: "" }], "n".repeat(240)],
  ["sameport", {}, samePort],
];

describe.each(PORTMAP_VERSIONS)("portmap's rules, generated, against portmap $portmap", ({ dir }) => {
  for (const [name, options, raw, network] of cases) {
    for (const family of [4, 6] as const) {
      it(`are byte for byte what portmap wrote: ${name}, IPv${family}`, () => {
        const table = parseTable(fixture(`ops/${dir}${name}-v${family}.rules`));
        const { chain, rules } = generated(network ?? "cbr0", "abc123", family, options, raw);
        for (const c of new Set([...rules.keys(), chain, "CNI-HOSTPORT-DNAT", "POSTROUTING", "PREROUTING", "OUTPUT"])) {
          expect(rules.get(c) ?? [], c).toEqual(lines(rulesOf(table, c)));
        }
      });
    }
  }

  it("match the default case of a pod among others (IPv4 and IPv6)", () => {
    for (const family of [4, 6] as const) {
      const table = parseTable(fixture(`ops/${dir}default-v${family}.rules`));
      const { chain, rules } = generated("cbr0", "abc123", family, {}, three);
      expect(rules.get(chain)).toEqual(lines(rulesOf(table, chain)));
      expect(rules.get("CNI-HOSTPORT-DNAT")).toEqual(lines(rulesOf(table, "CNI-HOSTPORT-DNAT").slice(0, 2)));
    }
  });
});

describe("portmap's options", () => {
  it("refuses what portmap refuses, and what could not go into a restore payload", () => {
    expect(() => parsePortmapOptions({ markMasqBit: 3, externalSetMarkChain: "X" })).toThrow(/cannot specify/);
    expect(() => parsePortmapOptions({ markMasqBit: 32 })).toThrow(/between 0 and 31/);
    expect(() => parsePortmapOptions({ externalSetMarkChain: "A\nCOMMIT" })).toThrow(/not a chain name/);
    expect(() => parsePortmapOptions({ conditionsV4: ["-s 1.2.3.4"] })).toThrow(/single iptables word/);
    expect(() => parsePortmapOptions({ snat: "yes" })).toThrow(/snat/);
  });
});

describe("the rules generated for portmap", () => {
  it("read back as the same rules: text equality and model equality agree", () => {
    const o = parsePortmapOptions({
      type: "portmap",
      conditionsV4: ["!", "-s", "198.51.100.0/24", "-m", "addrtype", "--dst-type", "LOCAL"],
    });
    const mappings = parseNetConf({
      cniVersion: "1.0.0",
      name: "x",
      runtimeConfig: {
        portMappings: [
          { hostPort: 8080, containerPort: 80 },
          { hostPort: 5353, containerPort: 53, protocol: "udp", hostIP: "192.0.2.10" },
        ],
      },
    }).portMappings;
    const generated: Rule[] = [
      ...portmapChainRules("CNI-DN-x", podNet("10.244.1.5/24")!, mappings, o),
      ...portmapJumpRules("cbr0", "abc123", "CNI-DN-x", 4, mappings, o),
      ...portmapSharedRules(o).rules.map((s) => s.rule),
    ];
    for (const rule of generated) expect(sameRule(parseRule(formatRule(rule)), rule), formatRule(rule)).toBe(true);
  });
});
