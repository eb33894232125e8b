// The rule model and its iptables edge: every rule real portmap and iptables printed reads into the model and
// prints back byte for byte; what the model generates reads back as the same rule; and a rule of portmap's
// nftables backend fits the same model and the same scoping transform.
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseNetConf } from "../../src/core/config.js";
import { parseIp } from "../../src/core/ip.js";
import { commentOf, dportOf, protocolOf, type Rule, sameRule } from "../../src/core/rule.js";
import {
  parsePortmapOptions,
  podNet,
  portmapChainRules,
  portmapJumpRules,
  portmapSharedRules,
} from "../../src/iptables/portmap.js";
import { formatRule, parseRule } from "../../src/iptables/text.js";
import { scopeChain } from "../../src/pipeline/scope.js";
import { fixture } from "./fixtures.js";

const recorded = (dir: string, ext: string) =>
  readdirSync(fileURLToPath(new URL(`../fixtures/${dir}/`, import.meta.url)))
    .filter((f) => f.endsWith(ext))
    .flatMap((f) =>
      fixture(`${dir}/${f}`)
        .split("\n")
        .filter((l) => l.startsWith("-A ")),
    );

describe("the iptables reader and writer", () => {
  const lines = [...recorded("iptables", ".save"), ...recorded("ops", ".rules")];

  it("print every recorded rule back byte for byte", () => {
    expect(lines.length).toBeGreaterThan(100);
    for (const line of lines) expect(formatRule(parseRule(line))).toBe(line);
  });

  it("read portmap's rules into typed parts, text only where nothing reads it", () => {
    const jump = parseRule(
      '-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"cbr0\\" id: \\"abc123\\"" -m multiport --dports 8080,8443 -j CNI-DN-3e9a3d0f9583cdc0e7133',
    );
    expect(jump).toEqual({
      chain: "CNI-HOSTPORT-DNAT",
      matches: [
        { kind: "protocol", protocol: "tcp" },
        { kind: "comment", text: 'dnat name: "cbr0" id: "abc123"' },
        { kind: "other", text: "-m multiport --dports 8080,8443" },
      ],
      target: { kind: "jump", chain: "CNI-DN-3e9a3d0f9583cdc0e7133" },
    });
    const dnat = parseRule(
      "-A CNI-DN-x -s 127.0.0.1/32 -d 2001:db8::10/128 -p udp -m udp --dport 5353 -j DNAT --to-destination [fd00::5]:53",
    );
    expect(dnat).toMatchObject({
      source: { address: "127.0.0.1", negated: false },
      destination: { address: "2001:db8::10", negated: false },
      target: { kind: "dnat", to: "[fd00::5]:53" },
    });
    expect([protocolOf(dnat), dportOf(dnat)]).toEqual(["udp", 5353]);
    expect(formatRule(dnat, "-D")).toBe(formatRule(dnat).replace(/^-A/, "-D"));
  });

  it("keep a rule it cannot reproduce whole, as text", () => {
    const odd = "-A X  -p tcp -j ACCEPT";
    expect(formatRule(parseRule(odd))).toBe(odd);
    expect(parseRule(odd).matches).toEqual([{ kind: "other", text: " -p tcp -j ACCEPT" }]);
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

describe("a rule of portmap's nftables backend", () => {
  // `tcp dport 8080 dnat to 10.244.1.5:80 comment "ctr-aaaa1111"` in chain hostports, handle 11: as an nft reader
  // would give it (the reader and writer are the nftables backend's; the transform is shared).
  const nft: Rule = {
    chain: "hostports",
    matches: [
      { kind: "dport", protocol: "tcp", port: 8080 },
      { kind: "comment", text: "ctr-aaaa1111" },
    ],
    target: { kind: "dnat", to: "10.244.1.5:80" },
    handle: 11,
  };

  it("is scoped by the same transform: destination set per host IP, comment and handle kept", () => {
    const ip = (t: string) => parseIp(t)!;
    const { rules, missing } = scopeChain(
      [nft],
      [
        {
          mapping: { protocol: "tcp", hostPort: 8080, containerPort: 80, hostIp: undefined },
          protocol: "tcp",
          hostPort: 8080,
          containerPort: 80,
          ips: [ip("192.0.2.10"), ip("192.0.2.11")],
          hostIp: undefined,
        },
      ],
    );
    expect(missing).toEqual([]);
    expect(rules.map((r) => r.destination?.address)).toEqual(["192.0.2.10", "192.0.2.11"]);
    expect(rules.map((r) => [commentOf(r), r.handle, r.target])).toEqual([
      ["ctr-aaaa1111", 11, nft.target],
      ["ctr-aaaa1111", 11, nft.target],
    ]);
  });
});
