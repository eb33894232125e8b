// status on what real portmap wrote (test/fixtures/ops, test/fixtures/nftables) against cached pods: each
// mapping's owner, addresses, target, state and table; on a node with both iptables variants, a warning when
// both hold hostPort rules; the closed state: a live pod's mapping whose rules match no address from outside the
// node, with the reason.
import { describe, expect, it } from "vitest";
import { iptablesBackend } from "../../../src/backends/iptables.js";
import { natRules } from "../../../src/backends/iptables-node.js";
import { nftablesBackend } from "../../../src/backends/nftables.js";
import { nftRules } from "../../../src/backends/nftables-node.js";
import type { Family } from "../../../src/core/ip.js";
import type { IptablesVariant, NodeNetwork } from "../../../src/core/node.js";
import { type CachedAttachment, type CacheRead, parseCacheFile } from "../../../src/host/cache.js";
import { judge } from "../../../src/host/liveness.js";
import { nat } from "../../../src/iptables/nat.js";
import { formatRule } from "../../../src/iptables/text.js";
import { parseChainJson } from "../../../src/nftables/json.js";
import { statusJson, statusTable } from "../../../src/ops/render.js";
import { status, variantWarnings } from "../../../src/ops/status.js";
import { expectedChains } from "../../../src/pipeline/attachment.js";
import { cacheEntryJson } from "../../support/result-cache.js";
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

const LIST = {
  name: "cbr0",
  cniVersion: "1.0.0",
  plugins: [
    { type: "bridge", bridge: "cni0", ipam: { type: "host-local" } },
    { type: "portmap", capabilities: { portMappings: true } },
    { type: "portmap-hostip", capabilities: { portMappings: true } },
  ],
};

function attachment(mapping: object, families: Family[]): CachedAttachment {
  const ips = [
    ...(families.includes(4) ? [{ address: "10.244.1.5/24", interface: 1 }] : []),
    ...(families.includes(6) ? [{ address: "2001:db8:244:1::5/64", interface: 1 }] : []),
  ];
  return parseCacheFile(
    cacheEntryJson({
      list: LIST,
      containerID: "abc123",
      ifName: "eth0",
      args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
      capabilityArgs: { portMappings: [mapping] },
      result: { cniVersion: "1.0.0", interfaces: [{ name: "cni0" }, { name: "eth0", sandbox: "/x" }], ips },
    }),
    "/cache/results/cbr0-abc123-eth0",
    1,
  );
}

const tcp8080 = { HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: "" };
/** A node whose uplink has lost its default routes: "node" finds no address. */
const BARE: NodeNetwork = { ...NODE, defaultRouteInterfaces: { 4: [], 6: [] } };

/** Both nat tables as `iptables -S` prints them, holding the attachment's rules as computed on `written` (none: flushed). */
function closedTables(a: CachedAttachment, written: NodeNetwork | undefined) {
  const chains = written ? expectedChains(a, written) : [];
  const text = (family: Family) =>
    chains
      .filter((c) => c.family === family)
      .flatMap((c) => [`-N ${c.chain}`, ...[...c.rules, ...c.jumps].map((r) => formatRule(r))])
      .join("\n");
  return natRules(iptablesBackend(), nat(), new Map([4, 6].map((f) => [f as Family, text(f as Family)])));
}

function rowsOf(a: CachedAttachment, written: NodeNetwork | undefined, now: NodeNetwork) {
  const cached: CacheRead = { dir: "/cache/results", present: true, attachments: [a], unreadable: [], problems: [] };
  return status([closedTables(a, written)], cached, now, judge({ cache: cached, records: new Map(), now: 0 }));
}

const summary = (rows: ReturnType<typeof rowsOf>) =>
  rows.map((r) => ({
    family: r.family,
    destinations: r.destinations,
    target: r.target,
    state: r.state,
    reason: r.reason,
  }));

describe("a closed mapping", () => {
  it('started closed by "node" (no address left): the 127.0.0.1 row and the family without rules, with the reason', () => {
    const why = `defaultHostIP "node" found no node address of the pod's families (IPv4 and IPv6)`;
    const rows = rowsOf(attachment(tcp8080, [4, 6]), BARE, BARE);
    expect(summary(rows)).toEqual([
      { family: 4, destinations: ["127.0.0.1"], target: "10.244.1.5:80", state: "closed", reason: why },
      { family: 6, destinations: [], target: "[2001:db8:244:1::5]:80", state: "closed", reason: why },
    ]);
    expect(rows[1]?.chain).toBe("ip6tables nat chain CNI-DN-3e9a3d0f9583cdc0e7133");
    const table = statusTable(rows);
    expect(table).toContain("none (IPv6)");
    expect(table).toContain(
      `  - answers on no address: defaultHostIP "node" found no node address of the\n    pod's families (IPv4 and IPv6)\n`,
    );
    expect(JSON.parse(statusJson(rows, [])).mappings[0]).toMatchObject({ state: "closed", reason: why });
  });

  it("names what the default left out and why", () => {
    const a = attachment(tcp8080, [4]);
    const entry = { ...LIST.plugins[2], defaultHostIP: "198.51.100.7" };
    const listed = { ...a, plugins: [...a.plugins.slice(0, 2), { ...entry, type: "portmap-hostip" }] };
    expect(summary(rowsOf(listed, NODE, NODE))).toEqual([
      {
        family: 4,
        destinations: [],
        target: "10.244.1.5:80",
        state: "closed",
        reason: "defaultHostIP left no address of this node: 198.51.100.7 (it is not an address of this node)",
      },
    ]);
  });

  it("still closed when the addresses came back and its rules were not computed again", () => {
    expect(summary(rowsOf(attachment(tcp8080, [4]), BARE, NODE))).toEqual([
      {
        family: 4,
        destinations: ["127.0.0.1"],
        target: "10.244.1.5:80",
        state: "closed",
        reason: "its rules match only 127.0.0.1, though the policy gives it addresses now",
      },
    ]);
  });

  it("whose rules are gone (a flushed nat table)", () => {
    expect(summary(rowsOf(attachment(tcp8080, [4]), undefined, NODE))).toEqual([
      { family: 4, destinations: [], target: "10.244.1.5:80", state: "closed", reason: "its rules are missing" },
    ]);
  });

  it("whose runtime hostIP is of a family the pod lacks", () => {
    const rows = rowsOf(attachment({ ...tcp8080, HostIP: "2001:db8::10" }, [4]), NODE, NODE);
    expect(summary(rows)).toEqual([
      {
        family: 6,
        destinations: [],
        target: "",
        state: "closed",
        reason: "hostIP 2001:db8::10 (from the runtime) is IPv6: the pod has only IPv4 addresses",
      },
    ]);
  });
});

describe("an open mapping", () => {
  it("is not closed where one family answers, though the other has no address", () => {
    const v4only: NodeNetwork = { ...NODE, defaultRouteInterfaces: { ...NODE.defaultRouteInterfaces, 6: [] } };
    const rows = rowsOf(attachment(tcp8080, [4, 6]), v4only, v4only);
    expect(rows.map((r) => [r.family, r.state])).toEqual([[4, "scoped"]]);
  });
});
