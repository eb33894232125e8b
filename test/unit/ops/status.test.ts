// status on what real portmap wrote (test/fixtures/ops, test/fixtures/nftables) against cached pods: each
// mapping's owner, addresses, target, state and table; on a node with both iptables variants, a warning when
// both hold hostPort rules.
import { describe, expect, it } from "vitest";
import { iptablesBackend } from "../../../src/backends/iptables.js";
import { natRules } from "../../../src/backends/iptables-node.js";
import { nftablesBackend } from "../../../src/backends/nftables.js";
import { nftRules } from "../../../src/backends/nftables-node.js";
import type { Family } from "../../../src/core/ip.js";
import type { IptablesVariant } from "../../../src/core/node.js";
import { judge } from "../../../src/host/liveness.js";
import { nat } from "../../../src/iptables/nat.js";
import { parseChainJson } from "../../../src/nftables/json.js";
import { status, variantWarnings } from "../../../src/ops/status.js";
import { a, cache, statusOf, tables } from "../cached-pods.js";
import { fixture, NODE } from "../fixtures.js";

describe("status", () => {
  const rows = statusOf([tables("default")]);
  const row = (pod: string, family: Family, port: number) =>
    rows.find((r) => r.pod === pod && r.family === family && r.hostPort === port)!;

  it("gives every mapping its owner, addresses, target and state", () => {
    expect(row("default/a", 4, 8443)).toMatchObject({
      protocol: "tcp",
      destinations: ["192.0.2.10"],
      target: "10.244.1.5:443",
      state: "scoped",
      network: "cbr0",
    });
    const alone = statusOf([tables("nosnat")], cache([a])).find((r) => r.family === 6 && r.hostPort === 8080);
    expect(alone).toMatchObject({
      pod: "default/a",
      destinations: [],
      target: "[2001:db8:244:1::5]:80",
      state: "unscoped",
      captures: [],
    });
  });

  it("names the Service address an unscoped mapping captures (kube-ipvs0), not node or pod-gateway addresses", () => {
    const alone = statusOf([tables("default")], cache([a])).find(
      (r) => r.pod === "default/a" && r.family === 4 && r.hostPort === 8080,
    )!;
    expect(alone.captures).toEqual(["10.96.0.50"]);
  });

  it("marks the same address:port claimed twice as a conflict and names the winner by rule order", () => {
    expect(row("default/a", 4, 5353)).toMatchObject({ state: "conflict", winner: "default/a" });
    expect(row("default/b", 4, 5353)).toMatchObject({ state: "conflict", winner: "default/a" });
  });

  it("marks chains without a cached attachment as orphans (named by the jump's container ID)", () => {
    expect(row("abc999", 4, 8080)).toMatchObject({
      state: "orphan",
      network: "other",
      containerId: "abc999",
      winner: "default/a",
    });
    expect(row("default/a", 4, 8080)).toMatchObject({
      state: "conflict",
      winner: "default/a",
      captures: ["10.96.0.50"],
    });
  });

  it("without a cache, judges no orphans", () => {
    const none = statusOf([tables("default")], {
      dir: "/x",
      present: false,
      attachments: [],
      unreadable: [],
      problems: [],
    });
    expect(none.some((r) => r.state === "orphan")).toBe(false);
  });
});

describe("status on portmap's nftables backend (recorded v1.9.1 output)", () => {
  // abc123 (pod a): ADD twice (every rule appended again); def456 (not pod b's mappings: no cached owner here) on 8080 too.
  const hostports = parseChainJson(fixture("nftables/repeated-v4.json"));
  const nft = nftRules(nftablesBackend, [{ family: 4, chain: "hostports", present: true, rules: hostports }]);
  const rows = statusOf([nft], cache([a]));
  const row = (pod: string, port: number) => rows.find((r) => r.pod === pod && r.hostPort === port)!;

  it("gives one row per mapping of each container, owned through the cache by container ID", () => {
    expect(rows.map((r) => [r.pod, r.protocol, r.hostPort, r.chain])).toEqual([
      ["def456", "tcp", 8080, "ip cni_hostport hostports"],
      ["default/a", "tcp", 8080, "ip cni_hostport hostports"],
      ["default/a", "tcp", 8443, "ip cni_hostport hostports"],
      ["default/a", "udp", 5353, "ip cni_hostport hostports"],
    ]);
    expect(row("default/a", 8443)).toMatchObject({
      state: "scoped",
      destinations: ["192.0.2.10"],
      target: "10.244.1.5:443",
      reachable: true,
    });
  });

  it("takes rule order for who wins a shared port, and a container the cache does not know for an orphan", () => {
    expect(row("default/a", 8080)).toMatchObject({ state: "conflict", winner: "default/a", destinations: [] });
    expect(row("def456", 8080)).toMatchObject({ state: "orphan", winner: "default/a" });
  });
});

const NO_CACHE = { dir: "/cache/results", present: false, attachments: [], unreadable: [], problems: [] };
/** A variant's nat table as recorded (both families of test/fixtures/ops/NAME), or empty. */
const table = (v: IptablesVariant, name?: string) =>
  natRules(
    iptablesBackend(v),
    nat(v),
    new Map(([4, 6] as const).map((f) => [f, name ? fixture(`ops/${name}-v${f}.rules`) : "-P PREROUTING ACCEPT\n"])),
  );

describe("status on a node with both iptables variants", () => {
  it("names each row's table", () => {
    const rows = status(
      [table("legacy", "default"), table("nft")],
      NO_CACHE,
      NODE,
      judge({ cache: NO_CACHE, records: new Map(), now: 0 }),
    );
    expect(rows.length).toBeGreaterThan(0);
    expect(new Set(rows.map((r) => r.backend))).toEqual(new Set(["iptables-legacy"]));
  });

  it("warns when both variants hold hostPort rules, and only then", () => {
    expect(variantWarnings([table("legacy", "default"), table("nft")])).toEqual([]);
    expect(variantWarnings([table("legacy", "default"), table("nft", "default")])).toEqual([
      "iptables-legacy and iptables-nft both hold hostPort rules: portmap reads and deletes them in one only, the one the node's CNI plugins run (the TABLE column says which rows are where)",
    ]);
  });
});
