import { describe, expect, it } from "vitest";
import { appendRules, restorePayload, tokenize } from "../../src/iptables/text.js";
import { parseIp } from "../../src/core/ip.js";
import type { FamilyScope } from "../../src/policy/resolve.js";
import { CHAIN, PORTMAP_VERSIONS, chainOf as chainIn, fixture, lines, rules as read, scopeChain } from "./fixtures.js";

const ip = (text: string) => parseIp(text)!;
const scope = (hostPort: number, ips: string[], protocol: FamilyScope["protocol"] = "tcp", foreign: string[] = []): FamilyScope => ({
  protocol,
  hostPort,
  ips: ips.map(ip),
  foreign: foreign.map(ip),
});

describe("tokenize", () => {
  it("keeps quoted comments with escaped quotes as one token", () => {
    const line = fixture("iptables/reference-v4.save").split("\n").find((l) => l.startsWith("-A CNI-HOSTPORT-DNAT -p tcp"))!;
    const tokens = tokenize(line);
    expect(tokens).toContain('"dnat name: \\"cbr0\\" id: \\"abc123\\""');
    expect(tokens.join(" ")).toBe(line);
  });
});

describe.each(PORTMAP_VERSIONS)("scopeChain on what real portmap $portmap wrote", ({ dir }) => {
  const chainOf = (name: string) => chainIn(name, CHAIN, dir);

  it("gives byte for byte the chain portmap writes itself for that hostIP (IPv4)", () => {
    const { rules, missing } = scopeChain(chainOf("unscoped-v4"), [scope(8080, ["192.0.2.11"])]);
    expect(missing).toEqual([]);
    expect(rules).toEqual(chainOf("scoped-192.0.2.11-v4"));
  });

  it("gives byte for byte the chain portmap writes itself for that hostIP (IPv6)", () => {
    expect(scopeChain(chainOf("unscoped-v6"), [scope(8080, ["2001:db8::10"])]).rules).toEqual(chainOf("scoped-2001.db8..10-v6"));
  });

  it("repeats the mapping's whole rule set for each host IP, in place", () => {
    const { rules } = scopeChain(chainOf("reference-v4"), [scope(8080, ["192.0.2.11", "127.0.0.1"])]);
    const original = chainOf("reference-v4");
    const scoped = (rule: string, d: string) => rule.replace(/^(-A \S+( -s \S+)?)/, `$1 -d ${d}`);
    expect(rules).toEqual([
      ...original.slice(0, 3).map((r) => scoped(r, "192.0.2.11/32")),
      ...original.slice(0, 3).map((r) => scoped(r, "127.0.0.1/32")),
      ...original.slice(3),
    ]);
  });

  it("keeps the rules of mappings the runtime scoped, and of other ports, where they are", () => {
    const original = chainOf("reference-v4");
    const { rules } = scopeChain(original, [scope(5353, ["192.0.2.11"], "udp")]);
    expect(rules.slice(0, 6)).toEqual(original.slice(0, 6));
    expect(rules.slice(6)).toEqual(original.slice(6).map((r) => r.replace(/^(-A \S+( -s \S+)?)/, "$1 -d 192.0.2.11/32")));
  });

  it("does not take a runtime-scoped sibling on the same port for its own", () => {
    const sibling = `-A ${CHAIN} -d 192.0.2.10/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.1.5:81`;
    const chain = [...chainOf("unscoped-v4"), sibling];
    const { rules } = scopeChain(chain, [scope(8080, ["192.0.2.11"], "tcp", ["192.0.2.10"])]);
    expect(rules).toEqual([...chainOf("scoped-192.0.2.11-v4"), sibling]);
  });

  it.each(["nosnat", "masqall", "setmark"])("follows portmap's option %s as written, byte for byte what portmap writes for that hostIP", (name) => {
    const { rules, missing } = scopeChain(chainOf(`${name}-v4`), [scope(8080, ["192.0.2.11"])]);
    expect(missing).toEqual([]);
    expect(rules).toEqual(chainOf(`${name}-scoped-192.0.2.11-v4`));
  });

  it("is idempotent, also after portmap re-appends its unscoped rules on a repeated ADD", () => {
    const scopes = [scope(8080, ["192.0.2.10", "192.0.2.11"]), scope(5353, ["192.0.2.11"], "udp")];
    const once = scopeChain(chainOf("reference-v4"), scopes).rules;
    expect(scopeChain(once, scopes).rules).toEqual(once);
    const reappended = [...once, ...chainOf("reference-v4").filter((r) => !/ -d /.test(r))];
    expect(scopeChain(reappended, scopes).rules).toEqual(once);
  });

  it("re-scopes when the host IPs changed", () => {
    const first = scopeChain(chainOf("unscoped-v4"), [scope(8080, ["192.0.2.10"])]).rules;
    expect(scopeChain(first, [scope(8080, ["192.0.2.11"])]).rules).toEqual(chainOf("scoped-192.0.2.11-v4"));
  });

  it("drops the mapping's rules in a family left with no host IP", () => {
    expect(scopeChain(chainOf("unscoped-v6"), [scope(8080, [])])).toEqual({ rules: [], missing: [] });
  });

  it("reports a mapping to scope that has no rule (portmap missing or after us)", () => {
    const s = scope(9090, ["192.0.2.11"]);
    expect(scopeChain(chainOf("unscoped-v4"), [s]).missing).toEqual([s]);
    expect(scopeChain([], [s]).missing).toEqual([s]);
  });
});

describe("iptables-restore payload", () => {
  it("replaces exactly one chain of the nat table", () => {
    expect(restorePayload("CNI-DN-x", read(["-A CNI-DN-x -j RETURN"]))).toBe("*nat\n:CNI-DN-x - [0:0]\n-A CNI-DN-x -j RETURN\nCOMMIT\n");
  });

  it("reads the rules of `iptables -S <chain>`", () => {
    expect(lines(appendRules(`-N ${CHAIN}\n${chainIn("unscoped-v4").join("\n")}\n`))).toEqual(chainIn("unscoped-v4"));
  });
});
