// The nftables edge against what portmap v1.9.1's nftables backend wrote (test/fixtures/nftables/record.sh).
import { describe, expect, it } from "vitest";
import {
  NEVER,
  type NftRule,
  type Rewrite,
  applyRewrites,
  describeRule,
  parseChainJson,
  podRules,
  rewriteBatch,
  scopeHostports,
} from "../../src/nftables/rules.js";
import { parseIp } from "../../src/policy/ip.js";
import type { FamilyScope } from "../../src/policy/resolve.js";
import { cniError, fixture } from "./fixtures.js";

const ID = "abc123";
const chain = (name: string) => parseChainJson(fixture(`nftables/${name}.json`));
const exprsOf = (name: string) => podRules(chain(name), ID).map((r) => r.expr);
const scope = (hostPort: number, ips: string[], protocol: FamilyScope["protocol"] = "tcp", foreign: string[] = []): FamilyScope => ({
  protocol,
  hostPort,
  ips: ips.map((t) => parseIp(t)!),
  foreign: foreign.map((t) => parseIp(t)!),
});

/** What the kernel holds after the batch: rewritten rules get fresh handles, the anchor keeps its own. */
function applied(rules: readonly NftRule[], rewrites: readonly Rewrite[]): NftRule[] {
  let next = Math.max(...rules.map((r) => r.handle)) + 1;
  return rules.flatMap((r) => {
    const at = rewrites.find((w) => w.anchor === r.handle);
    if (at) return at.exprs.map((expr, i) => ({ handle: i === at.exprs.length - 1 ? r.handle : next++, comment: r.comment, expr }));
    return rewrites.some((w) => w.drop.includes(r.handle)) ? [] : [r];
  });
}

describe("reading nft -a -j list chain", () => {
  it("gives each rule with its handle and comment, in chain order", () => {
    const rules = chain("reference-v4");
    expect(rules.map((r) => [r.handle, r.comment])).toEqual([
      [11, ID],
      [12, ID],
      [13, ID],
    ]);
    expect(rules.map((r) => describeRule(r.expr))).toEqual([
      "tcp dport 8080 dnat to 10.244.1.5:80",
      "daddr 192.0.2.10 tcp dport 8443 dnat to 10.244.1.5:443",
      "udp dport 5353 dnat to 10.244.1.5:53",
    ]);
    expect(chain("reference-v6").map((r) => describeRule(r.expr))).toEqual(["tcp dport 8080 dnat to [2001:db8:244:1::5]:80"]);
  });

  it("refuses what is not nft's JSON listing (CniError, code 5)", () => {
    expect(cniError(() => parseChainJson("table ip cni_hostport {")).code).toBe(5);
    expect(cniError(() => parseChainJson('{"nftables":[{"rule":{"handle":"11","expr":[]}}]}')).message).toMatch(/unexpected output of nft/);
  });
});

describe("scoping on what real portmap v1.9.1 wrote", () => {
  it("gives exactly the rule portmap writes itself for that hostIP (IPv4), in place, same handle", () => {
    const rules = chain("unscoped-v4");
    const { rewrites, missing } = scopeHostports(rules, ID, 4, [scope(8080, ["192.0.2.11"])]);
    expect(missing).toEqual([]);
    expect(rewrites).toEqual([{ family: 4, anchor: 11, drop: [], exprs: exprsOf("scoped-192.0.2.11-v4") }]);
    expect(applyRewrites(rules, rewrites)).toEqual(exprsOf("scoped-192.0.2.11-v4"));
  });

  it("gives exactly the rule portmap writes itself for that hostIP (IPv6)", () => {
    const { rewrites } = scopeHostports(chain("unscoped-v6"), ID, 6, [scope(8080, ["2001:db8::10"])]);
    expect(applyRewrites(chain("unscoped-v6"), rewrites)).toEqual(exprsOf("scoped-2001.db8..10-v6"));
  });

  it("writes one rule per host IP where the mapping's rule was: portmap's rules for those hostIPs, in order", () => {
    const { rewrites } = scopeHostports(chain("unscoped-v4"), ID, 4, [scope(8080, ["192.0.2.10", "192.0.2.11", "127.0.0.1"])]);
    expect(applyRewrites(chain("unscoped-v4"), rewrites)).toEqual(exprsOf("scoped-three-v4"));
  });

  it("leaves runtime-scoped mappings and other ports where they are", () => {
    const rules = chain("reference-v4");
    const { rewrites } = scopeHostports(rules, ID, 4, [scope(5353, ["192.0.2.11"], "udp")]);
    expect(rewrites.map((w) => w.anchor)).toEqual([13]);
    const after = applyRewrites(rules, rewrites);
    expect(after.slice(0, 2)).toEqual(rules.slice(0, 2).map((r) => r.expr));
    expect(describeRule(after[2]!)).toBe("daddr 192.0.2.11 udp dport 5353 dnat to 10.244.1.5:53");
  });

  it("does not take a runtime-scoped sibling on the same port for its own", () => {
    const rules = chain("reference-v4").map((r) => (r.handle === 12 ? { ...r, expr: chain("scoped-192.0.2.11-v4")[0]!.expr.map((s) => s) } : r));
    const sibling = rules[1]!;
    // Pretend the runtime scoped the sibling 8080 mapping to 192.0.2.11; ours goes to 192.0.2.10.
    const { rewrites } = scopeHostports(rules, ID, 4, [scope(8080, ["192.0.2.10"], "tcp", ["192.0.2.11"])]);
    expect(rewrites.map((w) => [w.anchor, w.drop])).toEqual([[11, []]]);
    expect(applyRewrites(rules, rewrites)[1]).toEqual(sibling.expr);
  });

  it("never touches another container's rules", () => {
    const rules = chain("repeated-v4");
    const { rewrites } = scopeHostports(rules, "def456", 4, [scope(8080, ["192.0.2.11"])]);
    expect(rewrites).toEqual([{ family: 4, anchor: 20, drop: [], exprs: [expect.anything()] }]);
    expect(scopeHostports(rules, ID, 4, [scope(8080, ["192.0.2.11"])]).rewrites.flatMap((w) => [w.anchor, ...w.drop])).not.toContain(20);
  });

  it("after portmap's repeated ADD (every rule appended again), ends where one ADD ends", () => {
    const scopes = [scope(8080, ["192.0.2.10", "192.0.2.11"]), scope(5353, ["192.0.2.11"], "udp")];
    const once = applied(chain("reference-v4"), scopeHostports(chain("reference-v4"), ID, 4, scopes).rewrites);
    const repeated = chain("repeated-v4");
    const { rewrites } = scopeHostports(repeated, ID, 4, scopes);
    expect(rewrites.map((w) => [w.anchor, w.drop])).toEqual([
      [11, [27]],
      [13, [29]],
    ]);
    const after = podRules(applied(repeated, rewrites), ID);
    // portmap's own duplicate of the runtime-scoped 8443 rule is portmap's, left as it is.
    expect(after.map((r) => r.expr)).toEqual([...podRules(once, ID).map((r) => r.expr), chain("repeated-v4")[5]!.expr]);
  });

  it("is idempotent: the scoped chain needs no rewrite", () => {
    const scopes = [scope(8080, ["192.0.2.10", "127.0.0.1"]), scope(5353, ["192.0.2.11"], "udp")];
    const once = applied(chain("reference-v4"), scopeHostports(chain("reference-v4"), ID, 4, scopes).rewrites);
    expect(scopeHostports(once, ID, 4, scopes).rewrites).toEqual([]);
  });

  it("re-scopes when the host IPs changed", () => {
    const first = applied(chain("unscoped-v4"), scopeHostports(chain("unscoped-v4"), ID, 4, [scope(8080, ["192.0.2.10"])]).rewrites);
    const { rewrites } = scopeHostports(first, ID, 4, [scope(8080, ["192.0.2.11"])]);
    expect(applyRewrites(first, rewrites)).toEqual(exprsOf("scoped-192.0.2.11-v4"));
  });

  it("keeps one never-matching rule for a mapping left with no host IP in a family (portmap's CHECK counts rules)", () => {
    const { rewrites } = scopeHostports(chain("unscoped-v6"), ID, 6, [scope(8080, [])]);
    const after = applyRewrites(chain("unscoped-v6"), rewrites);
    expect(after).toHaveLength(podRules(chain("unscoped-v6"), ID).length);
    expect(describeRule(after[0]!)).toBe(`daddr ${NEVER[6]} tcp dport 8080 dnat to [2001:db8:244:1::5]:80`);
    expect(scopeHostports(applied(chain("unscoped-v6"), rewrites), ID, 6, [scope(8080, [])]).rewrites).toEqual([]);
  });

  it("reports a mapping to scope that has no rule (portmap missing or after us)", () => {
    const s = scope(9090, ["192.0.2.11"]);
    expect(scopeHostports(chain("unscoped-v4"), ID, 4, [s]).missing).toEqual([s]);
    expect(scopeHostports([], ID, 4, [s]).missing).toEqual([s]);
    expect(scopeHostports([], ID, 6, [scope(9090, [])]).missing).toEqual([]);
  });
});

describe("the batch", () => {
  it("inserts before the anchor, replaces the anchor with the last rule, deletes the rest, both families in one document", () => {
    const w4 = scopeHostports(chain("repeated-v4"), ID, 4, [scope(8080, ["192.0.2.10", "192.0.2.11"])]).rewrites;
    const w6 = scopeHostports(chain("reference-v6"), ID, 6, [scope(8080, ["2001:db8::10"])]).rewrites;
    const doc = JSON.parse(rewriteBatch(ID, [...w4, ...w6])) as { nftables: Record<string, { rule: Record<string, unknown> }>[] };
    expect(doc.nftables.map((c) => [Object.keys(c)[0], Object.values(c)[0]!.rule["family"], Object.values(c)[0]!.rule["handle"]])).toEqual([
      ["insert", "ip", 11],
      ["replace", "ip", 11],
      ["delete", "ip", 27],
      ["replace", "ip6", 11],
    ]);
    for (const c of doc.nftables) {
      const rule = Object.values(c)[0]!.rule;
      expect(rule).toMatchObject({ table: "cni_hostport", chain: "hostports" });
      if (!("delete" in c)) expect(rule["comment"]).toBe(ID);
    }
  });
});
