import { describe, expect, it } from "vitest";
import { parseIp } from "../../src/core/ip.js";
import { appendRules, restorePayload, swapPayload, tokenize } from "../../src/iptables/text.js";
import type { FamilyScope } from "../../src/policy/resolve.js";
import { CHAIN, chainOf as chainIn, fixture, lines, PORTMAP_VERSIONS, rules as read, scopeChain } from "./fixtures.js";

/** The recorded chains of Debian's portmap (1.1.1). */
const chainOf = (name: string) => chainIn(name);
const ip = (text: string) => parseIp(text)!;
/** The recorded chains map 8080 → 80, 8443 → 443, 5353 → 53. */
const CONTAINER_PORT: Record<number, number> = { 8080: 80, 8443: 443, 5353: 53 };
const scope = (
  hostPort: number,
  ips: string[] | undefined,
  protocol: FamilyScope["protocol"] = "tcp",
  containerPort = CONTAINER_PORT[hostPort] ?? 1,
  hostIp?: string,
): FamilyScope => ({
  mapping: { hostPort, containerPort, protocol, hostIp: hostIp === undefined ? undefined : ip(hostIp) },
  protocol,
  hostPort,
  containerPort,
  ips: ips?.map(ip),
  hostIp: hostIp === undefined ? undefined : ip(hostIp),
});

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

describe.each(PORTMAP_VERSIONS)("scopeChain on what real portmap $portmap wrote", ({ dir }) => {
  const chainOf = (name: string) => chainIn(name, CHAIN, dir);

  it("gives byte for byte the chain portmap writes itself for that hostIP (IPv4)", () => {
    const { rules, missing } = scopeChain(chainOf("unscoped-v4"), [scope(8080, ["192.0.2.11"])]);
    expect(missing).toEqual([]);
    expect(rules).toEqual(chainOf("scoped-192.0.2.11-v4"));
  });

  it("gives byte for byte the chain portmap writes itself for that hostIP (IPv6)", () => {
    expect(scopeChain(chainOf("unscoped-v6"), [scope(8080, ["2001:db8::10"])]).rules).toEqual(
      chainOf("scoped-2001.db8..10-v6"),
    );
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
    expect(rules.slice(6)).toEqual(
      original.slice(6).map((r) => r.replace(/^(-A \S+( -s \S+)?)/, "$1 -d 192.0.2.11/32")),
    );
  });

  it("does not take a runtime-scoped sibling on the same port for its own", () => {
    const sibling = `-A ${CHAIN} -d 192.0.2.10/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.1.5:81`;
    const chain = [...chainOf("unscoped-v4"), sibling];
    const { rules } = scopeChain(chain, [scope(8080, ["192.0.2.11"])]);
    expect(rules).toEqual([...chainOf("scoped-192.0.2.11-v4"), sibling]);
  });

  it.each(["nosnat", "masqall", "setmark"])(
    "follows portmap's option %s as written, byte for byte what portmap writes for that hostIP",
    (name) => {
      const { rules, missing } = scopeChain(chainOf(`${name}-v4`), [scope(8080, ["192.0.2.11"])]);
      expect(missing).toEqual([]);
      expect(rules).toEqual(chainOf(`${name}-scoped-192.0.2.11-v4`));
    },
  );

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

describe("scopeChain: the same hostPort twice, in portmap's order", () => {
  // portmap's rules for 8080 → 80 with hostIP 192.0.2.10, then 8080 → 81 with none (recorded chains, edited).
  const specific = chainOf("unscoped-v4").map((r) => r.replace(/^(-A \S+( -s \S+)?)/, "$1 -d 192.0.2.10/32"));
  const none81 = chainOf("unscoped-v4").map((r) => r.replace(":80", ":81"));
  const d = (rules: string[], cidr: string) =>
    rules.map((r) => r.replace(/^(-A \S+( -s \S+)?)( -d \S+)?/, `$1 -d ${cidr}`));

  it("writes each mapping's rules in portmap's order: the runtime's as written, ours per host IP", () => {
    const scopes = [
      scope(8080, undefined, "tcp", 80, "192.0.2.10"),
      scope(8080, ["192.0.2.10", "192.0.2.11"], "tcp", 81),
    ];
    const { rules, missing } = scopeChain([...specific, ...none81], scopes);
    expect(missing).toEqual([]);
    // The second mapping's marks for 192.0.2.10 equal the first's: left out, as portmap alone leaves them out.
    expect(rules).toEqual([...specific, ...d(none81, "192.0.2.10/32").slice(-1), ...d(none81, "192.0.2.11/32")]);
    // Once more, and after portmap's repeated ADD re-appended the rules it no longer finds.
    expect(scopeChain(rules, scopes).rules).toEqual(rules);
    expect(scopeChain([...rules, ...none81], scopes).rules).toEqual(rules);
  });

  it("keeps none before a specific hostIP when portmap wrote it so, also when both rule sets are the same (same container port)", () => {
    const scopes = [scope(8080, ["192.0.2.10", "192.0.2.11"]), scope(8080, undefined, "tcp", 80, "192.0.2.10")];
    const unscoped = chainOf("unscoped-v4");
    const { rules } = scopeChain([...unscoped, ...specific], scopes);
    // The specific mapping's rules all equal earlier ones: it can never receive traffic (and is warned about).
    expect(rules).toEqual([...specific, ...d(unscoped, "192.0.2.11/32")]);
    expect(scopeChain(rules, scopes).rules).toEqual(rules);
    expect(scopeChain([...rules, ...unscoped], scopes).rules).toEqual(rules);
  });

  it("writes a mapping of 0.0.0.0 or none as portmap did when the policy leaves it alone", () => {
    const scopes = [scope(8080, undefined, "tcp", 80), scope(8080, ["192.0.2.11"], "tcp", 81)];
    const { rules } = scopeChain([...chainOf("unscoped-v4"), ...none81], scopes);
    expect(rules).toEqual([...chainOf("unscoped-v4"), ...d(none81, "192.0.2.11/32")]);
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
