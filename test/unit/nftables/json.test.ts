// The nftables edge against what portmap v1.9.1's nftables backend wrote (test/fixtures/nftables/record.sh):
// nft's JSON read into the rule model and written back, the scoping pipeline on it, and the batch that
// turns a pod's rules into the scoped ones (applied here to a model of the chain, as the kernel does).
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import type { PortMapping } from "../../../src/core/config.js";
import { type Family, parseIp } from "../../../src/core/ip.js";
import { commentOf, type Rule, sameRules } from "../../../src/core/rule.js";
import {
  batch,
  describeRule,
  NEVER,
  parseChainJson,
  podRules,
  podRulesOfListing,
  rewriteCommands,
  writeRule,
} from "../../../src/nftables/json.js";
import { scopeFamily } from "../../../src/pipeline/pod.js";
import type { ResolvedMapping } from "../../../src/policy/resolve.js";
import { cniError, fixture } from "../fixtures.js";

const ID = "abc123";
type Json = Record<string, unknown>;
const chain = (name: string) => parseChainJson(fixture(`nftables/${name}.json`));
const familyOf = (name: string): Family => (name.endsWith("-v6") ? 6 : 4);
/** The `rule` objects of a recorded listing, as nft printed them. */
const recorded = (name: string) =>
  (JSON.parse(fixture(`nftables/${name}.json`)) as { nftables: Json[] }).nftables.flatMap((i) =>
    i["rule"] ? [i["rule"] as Json] : [],
  );

/** The recorded mappings' container ports (record.sh). */
const CONTAINER_PORT: Record<number, number> = { 8080: 80, 8443: 443, 5353: 53 };
/** A mapping resolved to host IPs (undefined: left as portmap wrote it). */
const mapping = (
  hostPort: number,
  ips: string[] | undefined,
  protocol: PortMapping["protocol"] = "tcp",
  hostIp?: string,
): ResolvedMapping => ({
  mapping: {
    hostPort,
    containerPort: CONTAINER_PORT[hostPort] ?? 80,
    protocol,
    hostIp: hostIp === undefined ? undefined : parseIp(hostIp)!,
  },
  source: ips === undefined ? "runtime" : "annotation",
  ips: ips?.map((t) => parseIp(t)!),
  leftOut: [],
  closed: false,
});

/** The pod's rules in one family as ADD plans them on nftables (a family without host IPs keeps never-matching rules). */
function plan(name: string, resolved: ResolvedMapping[], containerId = ID) {
  const family = familyOf(name);
  const current = podRules(chain(name), containerId);
  return { current, ...scopeFamily(resolved, family, current, NEVER[family]) };
}

/** The kernel's side of a batch on a model of the chain: handles, insert before, add after, delete. */
function apply(rules: readonly Rule[], commands: readonly Json[]): Rule[] {
  let next = Math.max(0, ...rules.map((r) => r.handle ?? 0)) + 1;
  const out = [...rules];
  const index = (handle: unknown) => {
    const i = out.findIndex((r) => r.handle === handle);
    if (i < 0) throw new Error(`handle ${String(handle)} is gone`);
    return i;
  };
  for (const command of commands) {
    const [verb, body] = Object.entries(command)[0] as [string, { rule: Json }];
    const read = () => parseChainJson(JSON.stringify({ nftables: [{ rule: { ...body.rule, handle: next++ } }] }))[0]!;
    if (verb === "insert") out.splice(index(body.rule["handle"]), 0, read());
    else if (verb === "add") out.splice(index(body.rule["handle"]) + 1, 0, read());
    else if (verb === "delete") out.splice(index(body.rule["handle"]), 1);
    else throw new Error(`unexpected ${verb}`);
  }
  return out;
}

/** ADD on a recorded chain: plan, batch, apply; the pod's rules afterwards. */
function added(name: string, resolved: ResolvedMapping[]) {
  const p = plan(name, resolved);
  const after = apply(chain(name), rewriteCommands(p.family, p.current, p.rules));
  return { ...p, after, mine: podRules(after, ID) };
}

describe("reading nft -a -j list chain", () => {
  it("gives each rule with its handle, destination, port, target and comment, in chain order", () => {
    expect(chain("reference-v4").map((r) => [r.handle, describeRule(4, r)])).toEqual([
      [11, 'tcp dport 8080 dnat to 10.244.1.5:80 comment "abc123"'],
      [12, 'ip daddr 192.0.2.10 tcp dport 8443 dnat to 10.244.1.5:443 comment "abc123"'],
      [13, 'udp dport 5353 dnat to 10.244.1.5:53 comment "abc123"'],
    ]);
    expect(chain("reference-v6").map((r) => describeRule(6, r))).toEqual([
      'tcp dport 8080 dnat to [2001:db8:244:1::5]:80 comment "abc123"',
    ]);
  });

  it("writes every recorded rule back exactly as nft printed it", () => {
    const dir = fileURLToPath(new URL("../../fixtures/nftables/", import.meta.url));
    const names = readdirSync(dir)
      .filter((f) => f.endsWith(".json"))
      .map((f) => f.slice(0, -".json".length));
    expect(names.length).toBeGreaterThan(10);
    for (const name of names) {
      const rules = chain(name);
      recorded(name).forEach((original, i) => {
        const { handle: _h, ...written } = writeRule(familyOf(name), rules[i]!);
        expect(written, `${name} #${i}`).toEqual({
          family: original["family"],
          table: original["table"],
          chain: original["chain"],
          comment: original["comment"],
          expr: original["expr"],
        });
      });
    }
  });

  it("refuses what is not nft's JSON listing (CniError, code 5)", () => {
    expect(cniError(() => parseChainJson("table ip cni_hostport {")).code).toBe(5);
    expect(
      cniError(() => parseChainJson('{"nftables":[{"rule":{"chain":"hostports","handle":"11","expr":[]}}]}')).message,
    ).toMatch(/unexpected output of nft/);
  });
});

describe("scoping on what real portmap v1.9.1 wrote", () => {
  it("gives exactly the rule portmap writes itself for that hostIP (IPv4), in place", () => {
    const { mine, missing, after } = added("unscoped-v4", [mapping(8080, ["192.0.2.11"])]);
    expect(missing).toEqual([]);
    expect(mine.map((r) => writeRule(4, r).expr)).toEqual(recorded("scoped-192.0.2.11-v4").map((r) => r["expr"]));
    expect(after).toHaveLength(1);
  });

  it("gives exactly the rule portmap writes itself for that hostIP (IPv6)", () => {
    const { mine } = added("unscoped-v6", [mapping(8080, ["2001:db8::10"])]);
    expect(mine.map((r) => writeRule(6, r).expr)).toEqual(recorded("scoped-2001.db8..10-v6").map((r) => r["expr"]));
  });

  it("writes one rule per host IP where the mapping's rule was: portmap's rules for those hostIPs, in order", () => {
    const { mine } = added("unscoped-v4", [mapping(8080, ["192.0.2.10", "192.0.2.11", "127.0.0.1"])]);
    expect(sameRules(mine, chain("scoped-three-v4"))).toBe(true);
  });

  it("leaves runtime-scoped mappings and other ports where they are", () => {
    const { after, current } = added("reference-v4", [
      mapping(8080, undefined),
      mapping(8443, undefined, "tcp", "192.0.2.10"),
      mapping(5353, ["192.0.2.11"], "udp"),
    ]);
    expect(after.slice(0, 2)).toEqual(current.slice(0, 2));
    expect(describeRule(4, after[2]!)).toBe(
      'ip daddr 192.0.2.11 udp dport 5353 dnat to 10.244.1.5:53 comment "abc123"',
    );
  });

  it("never touches another container's rules", () => {
    const { after } = added("repeated-v4", [
      mapping(8080, ["192.0.2.11"]),
      mapping(8443, undefined, "tcp", "192.0.2.10"),
      mapping(5353, ["192.0.2.11"], "udp"),
    ]);
    expect(podRules(after, "def456")).toEqual(podRules(chain("repeated-v4"), "def456"));
  });

  it("after portmap's repeated ADD (every rule appended again), ends where one ADD ends", () => {
    const resolved = [
      mapping(8080, ["192.0.2.10", "192.0.2.11"]),
      mapping(8443, undefined, "tcp", "192.0.2.10"),
      mapping(5353, ["192.0.2.11"], "udp"),
    ];
    const once = added("reference-v4", resolved).mine;
    const twice = added("repeated-v4", resolved).mine;
    // portmap's own second copy of the runtime-scoped 8443 rule goes too: a rule equal to one already there.
    expect(sameRules(twice, once)).toBe(true);
    const order = added("repeated-v4", resolved).after.map((r) => describeRule(4, r).replace(/ comment .*/, ""));
    expect(order.indexOf("tcp dport 8080 dnat to 10.244.1.6:80")).toBeGreaterThan(
      order.indexOf("ip daddr 192.0.2.11 udp dport 5353 dnat to 10.244.1.5:53"),
    );
  });

  it("is idempotent: the scoped rules need no command", () => {
    const resolved = [mapping(8080, ["192.0.2.10", "127.0.0.1"])];
    const once = added("unscoped-v4", resolved).after;
    const again = scopeFamily(resolved, 4, podRules(once, ID), NEVER[4]);
    expect(rewriteCommands(4, podRules(once, ID), again.rules)).toEqual([]);
  });

  it("re-scopes when the host IPs changed", () => {
    const first = added("unscoped-v4", [mapping(8080, ["192.0.2.10"])]).after;
    const second = scopeFamily([mapping(8080, ["192.0.2.11"])], 4, podRules(first, ID), NEVER[4]);
    const after = apply(first, rewriteCommands(4, podRules(first, ID), second.rules));
    expect(sameRules(after, chain("scoped-192.0.2.11-v4"))).toBe(true);
  });

  it("keeps one never-matching rule for a mapping left with no host IP in a family (portmap's CHECK counts rules)", () => {
    const { mine, closed, current } = added("unscoped-v6", [mapping(8080, ["192.0.2.11"])]);
    expect(closed).toHaveLength(1);
    expect(mine).toHaveLength(current.length);
    expect(describeRule(6, mine[0]!)).toBe(
      `ip6 daddr ${NEVER[6]} tcp dport 8080 dnat to [2001:db8:244:1::5]:80 comment "abc123"`,
    );
  });

  it("reports a mapping to scope that has no rule (portmap missing or after us)", () => {
    expect(plan("unscoped-v4", [mapping(9090, ["192.0.2.11"])]).missing).toHaveLength(1);
    expect(scopeFamily([mapping(9090, ["192.0.2.11"])], 6, [], NEVER[6]).missing).toEqual([]);
  });
});

describe("the batch", () => {
  it("inserts before the rules it replaces, deletes them by handle, both families in one document", () => {
    const v4 = plan("repeated-v4", [
      mapping(8080, ["192.0.2.10", "192.0.2.11"]),
      mapping(8443, undefined, "tcp", "192.0.2.10"),
      mapping(5353, undefined, "udp"),
    ]);
    const v6 = plan("reference-v6", [mapping(8080, ["2001:db8::10"])]);
    const doc = JSON.parse(
      batch([...rewriteCommands(4, v4.current, v4.rules), ...rewriteCommands(6, v6.current, v6.rules)]),
    ) as {
      nftables: Array<Record<string, { rule: Json }>>;
    };
    expect(
      doc.nftables.map((c) => [
        Object.keys(c)[0],
        Object.values(c)[0]!.rule["family"],
        Object.values(c)[0]!.rule["handle"],
      ]),
    ).toEqual([
      ["insert", "ip", 11],
      ["insert", "ip", 11],
      ["delete", "ip", 11],
      ["delete", "ip", 27],
      ["delete", "ip", 28],
      ["delete", "ip", 29],
      ["insert", "ip6", 11],
      ["delete", "ip6", 11],
    ]);
    for (const c of doc.nftables) {
      const rule = Object.values(c)[0]!.rule;
      expect(rule).toMatchObject({ table: "cni_hostport", chain: "hostports" });
      if (!("delete" in c)) expect(rule["comment"]).toBe(ID);
    }
  });
});

// One pod's rules picked out of a whole listing without parsing the other rules: the same rules, handles
// included, as parsing it all gives.
const LISTINGS = readdirSync(fileURLToPath(new URL("../../fixtures/nftables/", import.meta.url))).filter((f) =>
  f.endsWith(".json"),
);
// Some listings are empty (a family portmap wrote nothing in); these hold several containers' rules.
const busy = ["reference-v4.json", "repeated-v4.json", "repeated-v6.json"];

describe("a pod's rules from a listing", () => {
  it.each(LISTINGS)("%s: every container's rules, and none of a container it lacks", (file) => {
    const text = fixture(`nftables/${file}`);
    const all = parseChainJson(text);
    const ids = [...new Set(all.flatMap((r) => commentOf(r) ?? []))];
    for (const id of [...ids, "zzz999", "abc"]) expect(podRulesOfListing(text, id)).toEqual(podRules(all, id));
  });

  it("has listings with rules to pick from", () => {
    for (const file of busy) expect(parseChainJson(fixture(`nftables/${file}`)).length).toBeGreaterThan(1);
  });

  it("reads a listing of another layout (compact JSON) whole, with the same result", () => {
    const text = fixture("nftables/repeated-v4.json");
    const compact = JSON.stringify(JSON.parse(text));
    for (const id of ["abc123", "def456"]) expect(podRulesOfListing(compact, id)).toEqual(podRulesOfListing(text, id));
  });

  it("is not fooled by the key inside another rule's comment text", () => {
    const text = fixture("nftables/repeated-v4.json").replace(
      '"comment": "def456"',
      `"comment": ${JSON.stringify('x "comment": "abc123"')}`,
    );
    expect(podRulesOfListing(text, "abc123")).toEqual(podRules(parseChainJson(text), "abc123"));
  });
});
