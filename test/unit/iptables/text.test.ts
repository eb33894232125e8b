// The iptables edge: every rule real portmap and iptables printed reads into the rule model and prints back
// byte for byte; tokens, iptables-restore payloads and `iptables -S <chain>` output.
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { dportOf, protocolOf } from "../../../src/core/rule.js";
import {
  appendRules,
  formatRule,
  parseRule,
  restorePayload,
  swapPayload,
  tokenize,
} from "../../../src/iptables/text.js";
import { CHAIN, chainOf as chainIn, fixture, lines, rules as read } from "../fixtures.js";

const recorded = (dir: string, ext: string) =>
  readdirSync(fileURLToPath(new URL(`../../fixtures/${dir}/`, import.meta.url)))
    .filter((f) => f.endsWith(ext))
    .flatMap((f) =>
      fixture(`${dir}/${f}`)
        .split("\n")
        .filter((l) => l.startsWith("-A ")),
    );

describe("tokenize", () => {
  it("keeps quoted comments with escaped quotes as one token", () => {
    const line = fixture("iptables/reference-v4.save")
      .split("\n")
      .find((l) => l.startsWith("-A CNI-HOSTPORT-DNAT -p tcp"))!;
    const tokens = tokenize(line);
    expect(tokens).toContain('"dnat name: \\"cbr0\\" id: \\"abc123\\""');
    expect(tokens.join(" ")).toBe(line);
  });
});

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

describe("iptables-restore payload", () => {
  it("replaces exactly one chain of the nat table", () => {
    expect(restorePayload("CNI-DN-x", read(["-A CNI-DN-x -j RETURN"]))).toBe(
      "*nat\n:CNI-DN-x - [0:0]\n-A CNI-DN-x -j RETURN\nCOMMIT\n",
    );
  });

  it("swaps rules: deletes each of the old ones (the transaction fails if one is missing), appends the new", () => {
    const old = read(["-A CNI-DN-x -p tcp -m tcp --dport 80 -j RETURN"]);
    const now = read(["-A CNI-DN-x -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j RETURN"]);
    expect(swapPayload(old, now)).toBe(
      "*nat\n-D CNI-DN-x -p tcp -m tcp --dport 80 -j RETURN\n-A CNI-DN-x -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j RETURN\nCOMMIT\n",
    );
  });

  it("reads the rules of `iptables -S <chain>`", () => {
    expect(lines(appendRules(`-N ${CHAIN}\n${chainIn("unscoped-v4").join("\n")}\n`))).toEqual(chainIn("unscoped-v4"));
  });
});
