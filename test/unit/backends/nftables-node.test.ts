// portmap's nftables rules on the node, as recorded from portmap v1.9.1's nftables backend: the pods they hold,
// the GC of dead containers' rules, and which dead containers' rules a keeper pass takes.
import { describe, expect, it } from "vitest";
import { nftablesBackend } from "../../../src/backends/nftables.js";
import { deadNow, type NftChain, nftRules, planNftGc } from "../../../src/backends/nftables-node.js";
import type { Family } from "../../../src/core/ip.js";
import type { CachedAttachment } from "../../../src/host/cache.js";
import { judge } from "../../../src/host/liveness.js";
import type { ContainerRecord } from "../../../src/host/record.js";
import { parseChainJson, podRules } from "../../../src/nftables/json.js";
import { cachedPod as pod } from "../cached-pods.js";
import { fixture, NODE } from "../fixtures.js";

type Json = Record<string, unknown>;
const chain = (name: string) => parseChainJson(fixture(`nftables/${name}.json`));
/** Both families' `hostports` as recorded in `<name>-v4.json` and `<name>-v6.json`, and no `masquerading` chain. */
const hostports = (name: string): NftChain[] =>
  ([4, 6] as const).map((family) => ({
    family,
    chain: "hostports",
    present: true,
    rules: chain(`${name}-v${family}`),
  }));

describe("portmap's nftables rules as read", () => {
  // abc123: ADD twice (every rule appended again); def456 on 8080 between them.
  const rules = nftRules(nftablesBackend, hostports("repeated"));

  it("hold each container's rules per family, owned by container ID alone, ranked by rule order", () => {
    expect(rules.families).toEqual([4, 6]);
    expect(
      rules.pods().map((p) => [p.family, p.key, p.place, p.owner, p.rules.map((r) => r.handle), p.reachable]),
    ).toEqual([
      [
        4,
        "abc123",
        "ip cni_hostport hostports",
        { network: null, containerId: "abc123" },
        [11, 12, 13, 27, 28, 29],
        true,
      ],
      [4, "def456", "ip cni_hostport hostports", { network: null, containerId: "def456" }, [20], true],
      [6, "abc123", "ip6 cni_hostport hostports", { network: null, containerId: "abc123" }, [11, 23], true],
      [6, "def456", "ip6 cni_hostport hostports", { network: null, containerId: "def456" }, [17], true],
    ]);
    const [abc, def] = rules.pods();
    expect([abc!.rank(3), def!.rank(0)]).toEqual([
      [0, 4],
      [0, 3],
    ]);
  });

  it("hold an attachment of any network whose container has rules there, known by its container ID", () => {
    expect(rules.keyOf({ network: "cbr0", containerId: "abc123" })).toBe("abc123");
    expect(
      [
        { network: "cbr0", containerId: "abc123" },
        { network: "other", containerId: "def456" },
        { network: "cbr0", containerId: "abc999" },
      ].map((pod) => rules.holds(pod)),
    ).toEqual([true, true, false]);
  });

  it("are in the families where portmap's table exists", () => {
    const v4only = nftRules(nftablesBackend, [
      { family: 4, chain: "hostports", present: true, rules: chain("reference-v4") },
      { family: 6, chain: "hostports", present: false, rules: [] },
    ]);
    expect([v4only.families, v4only.pods().map((p) => [p.family, p.key])]).toEqual([[4], [[4, "abc123"]]]);
  });

  it("give, under --dry-run, the rules of the containers no network has as collected, both families at once", async () => {
    const verdicts: Array<[string | null, string]> = [];
    const collected = await rules.collect((network, id) => {
      verdicts.push([network, id]);
      return id === "def456" ? "dead" : "live";
    }, true);
    expect(collected).toEqual([{ family: undefined, removed: [{ containerId: "def456", rules: 2 }], leftAlone: [] }]);
    expect(verdicts.every(([network]) => network === null)).toBe(true);
  });
});

describe("GC of dead containers' rules", () => {
  it("deletes every rule of a container no attachment has, in both chains and families, nothing else", () => {
    const chains = [
      { family: 4 as Family, rules: chain("repeated-v4") },
      { family: 6 as Family, rules: chain("repeated-v6") },
    ];
    const plan = planNftGc(chains, (id) => id === "def456");
    expect(plan.orphans).toEqual([{ containerId: "def456", rules: 2 }]);
    expect(plan.commands.map((c) => (c["delete"] as { rule: Json }).rule)).toEqual([
      { family: "ip", table: "cni_hostport", chain: "hostports", handle: 20 },
      {
        family: "ip6",
        table: "cni_hostport",
        chain: "hostports",
        handle: podRules(chain("repeated-v6"), "def456")[0]!.handle,
      },
    ]);
    expect(planNftGc(chains, () => false)).toEqual({ orphans: [], commands: [] });
  });
});

describe("portmap's nftables rules (recorded: container abc123 on 8080, 8443, 5353)", () => {
  const chains = [4, 6].map((family) => ({
    family: family as 4 | 6,
    chain: "hostports",
    rules: parseChainJson(fixture(`nftables/reference-v${family}.json`)),
  }));
  const view = (attachments: CachedAttachment[], records: ContainerRecord[] = []) => ({
    cache: { dir: "/c", present: true, attachments, unreadable: [], problems: [] },
    records: new Map(records.map((r) => [`${r.network}\n${r.containerId}`, r])),
    network: NODE,
    now: 100_000,
  });
  const judged = (v: ReturnType<typeof view>, goes: (conflicting: boolean, deleted: boolean) => boolean) => {
    const asked: Array<[number, string, boolean, boolean]> = [];
    const result = deadNow(chains, {
      view: v,
      verdict: judge(v),
      collectNow: (family, chain, conflicting, deleted) => {
        asked.push([family, chain, conflicting, deleted]);
        return goes(conflicting, deleted);
      },
    });
    return { ...result, asked };
  };

  it("a container no attachment of any network has is dead; it takes a live pod's port (either family's rules asked)", () => {
    const { goes, dead, asked } = judged(
      view([pod("def456", 8443)], [{ network: "cbr0", containerId: "abc123", state: "deleted", at: 0 }]),
      (conflicting, deleted) => conflicting && deleted,
    );
    expect(asked).toEqual([
      [4, "cni_hostport abc123", true, true],
      [6, "cni_hostport abc123", true, true],
    ]);
    expect([[...goes], dead]).toEqual([["abc123"], 1]);
  });

  it("a rule on no live pod's port waits; a container cached on any network, or whose ADD may run, is not dead", () => {
    expect(judged(view([pod("def456", 9090)]), (c) => c).goes.size).toBe(0);
    const other = { ...pod("abc123", 9090), network: "other" };
    expect(judged(view([other]), () => true)).toEqual({ goes: new Set(), dead: 0, asked: [] });
    const adding = { network: "cbr0", containerId: "abc123", state: "added" as const, at: 99_000 };
    expect(judged(view([], [adding]), () => true).dead).toBe(0);
  });
});
