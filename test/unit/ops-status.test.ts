// status, the result cache reader and GC planning, on what real portmap wrote (test/fixtures/ops).
import { describe, expect, it } from "vitest";
import type { NodeRules } from "../../src/backends/backend.js";
import { iptablesBackend } from "../../src/backends/iptables.js";
import { natRules } from "../../src/backends/iptables-node.js";
import { planGc } from "../../src/backends/iptables-plan.js";
import { nftablesBackend } from "../../src/backends/nftables.js";
import { nftRules } from "../../src/backends/nftables-node.js";
import type { Family } from "../../src/core/ip.js";
import { attachmentLabel, type CacheRead, parseCacheFile } from "../../src/host/cache.js";
import { judge } from "../../src/host/liveness.js";
import { nat } from "../../src/iptables/nat.js";
import { parseTable, portmapJumps } from "../../src/iptables/table.js";
import { parseChainJson } from "../../src/nftables/json.js";
import { statusJson, statusTable } from "../../src/ops/render.js";
import { status } from "../../src/ops/status.js";
import { cacheEntryJson } from "../support/result-cache.js";
import { fixture, NODE } from "./fixtures.js";

const list = (name: string, hostip: object | false = {}) => ({
  name,
  cniVersion: "1.0.0",
  plugins: [
    { type: "bridge", bridge: "cni0", ipam: { type: "host-local" } },
    { type: "portmap", capabilities: { portMappings: true } },
    ...(hostip === false
      ? []
      : [
          {
            type: "portmap-hostip",
            capabilities: { portMappings: true, "io.kubernetes.cri.pod-annotations": true },
            ...hostip,
          },
        ]),
  ],
});
const result = (v4: string, v6: string) => ({
  cniVersion: "1.0.0",
  interfaces: [{ name: "cni0" }, { name: "eth0", sandbox: "/var/run/netns/x" }],
  ips: [
    { address: `${v4}/24`, gateway: v4.replace(/\d+$/, "1"), interface: 1 },
    { address: `${v6}/64`, interface: 1 },
  ],
});
const entry = (network: string, id: string, pod: string, mappings: object[], v4: string, v6: string, mtimeMs: number) =>
  parseCacheFile(
    cacheEntryJson({
      list: list(network),
      containerID: id,
      ifName: "eth0",
      args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod};K8S_POD_INFRA_CONTAINER_ID=${id}`,
      capabilityArgs: { portMappings: mappings, "io.kubernetes.cri.pod-annotations": {} },
      result: result(v4, v6),
    }),
    `/cache/results/${network}-${id}-eth0`,
    mtimeMs,
  );

const three = [
  { HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: "" },
  { HostPort: 8443, ContainerPort: 443, Protocol: "tcp", HostIP: "192.0.2.10" },
  { HostPort: 5353, ContainerPort: 53, Protocol: "udp", HostIP: "0.0.0.0" },
];
const a = entry("cbr0", "abc123", "a", three, "10.244.1.5", "2001:db8:244:1::5", 1);
const b = entry(
  "cbr0",
  "def456",
  "b",
  [{ HostPort: 5353, ContainerPort: 53, Protocol: "udp", HostIP: "" }],
  "10.244.1.6",
  "2001:db8:244:1::6",
  2,
);
const cache = (attachments = [a, b]): CacheRead => ({
  dir: "/cache/results",
  present: true,
  attachments,
  unreadable: [],
  problems: [],
});
/** Both families' nat tables as recorded (`iptables -S`), as the iptables backend reads them. */
const tables = (name: string): NodeRules =>
  natRules(iptablesBackend(), nat(), new Map([4, 6].map((f) => [f as Family, fixture(`ops/${name}-v${f}.rules`)])));
/** status() with the verdicts of `c` and no records. */
const statusOf = (read: NodeRules[], c = cache()) =>
  status(read, c, NODE, judge({ cache: c, records: new Map(), now: 0 }));

describe("the result cache", () => {
  it("reads libcni's entry: conflist, CNI_ARGS, capability args, result", () => {
    expect(a.network).toBe("cbr0");
    expect(a.plugins.map((p) => p.type)).toEqual(["bridge", "portmap", "portmap-hostip"]);
    expect(attachmentLabel(a)).toBe("default/a");
    expect(a.capabilityArgs["portMappings"]).toEqual(three);
  });

  it("says what is wrong with a malformed entry instead of crashing", () => {
    const good = JSON.parse(
      cacheEntryJson({ list: list("cbr0"), containerID: "x1", ifName: "eth0", result: {} }),
    ) as Record<string, unknown>;
    const bad = (patch: Record<string, unknown>) => () => parseCacheFile(JSON.stringify({ ...good, ...patch }), "f", 0);
    expect(() => parseCacheFile("{", "f", 0)).toThrow(/not JSON/);
    expect(bad({ kind: "other" })).toThrow(/not a libcni cache entry \(kind/);
    expect(bad({ containerId: "../x" })).toThrow(/not a container ID/);
    expect(bad({ ifName: "a/b" })).toThrow(/not an interface name/);
    expect(bad({ networkName: 'a" -j ACCEPT' })).toThrow(/not a usable network name/);
    expect(bad({ config: "!!!" })).toThrow(/base64 of a JSON/);
    expect(bad({ networkName: "other" })).toThrow(/config names network "cbr0"/);
    expect(bad({ cniArgs: [["a"]] })).toThrow(/cniArgs/);
  });
});

describe("portmap's jumps", () => {
  it("are attributed only when the comment and the chain name agree", () => {
    const t = parseTable(fixture("ops/default-v4.rules"));
    expect(portmapJumps(t).map((j) => [j.index, j.owner?.network, j.owner?.containerId])).toEqual([
      [0, "cbr0", "abc123"],
      [1, "cbr0", "abc123"],
      [2, "cbr0", "def456"],
      [3, "other", "abc999"],
    ]);
    const forged = parseTable(fixture("ops/default-v4.rules").replace('id: \\"def456\\"', 'id: \\"zzz\\"'));
    expect(portmapJumps(forged)[2]?.owner).toBeUndefined();
  });

  it("of a network name cut to 255 characters attribute nothing", () => {
    expect(portmapJumps(parseTable(fixture("ops/longname-v4.rules"))).map((j) => j.owner)).toEqual([undefined]);
  });
});

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

  it("prints an aligned table within 80 columns and stable JSON", () => {
    const text = statusTable(rows);
    for (const line of text.split("\n")) expect(line.length).toBeLessThanOrEqual(80);
    expect(text.split("\n")[0]).toMatch(/^POD\s+PORT\s+MATCHES\s+TO\s+STATE$/);
    expect(text).toContain("  - shadowed by default/a\n");
    const json = JSON.parse(statusJson(rows, [])) as { mappings: Array<Record<string, unknown>> };
    expect(Object.keys(json.mappings[0]!)).toEqual([
      "family",
      "pod",
      "network",
      "containerId",
      "chain",
      "protocol",
      "hostPort",
      "destinations",
      "target",
      "state",
      "captures",
      "winner",
      "reachable",
      "reason",
    ]);
  });
});

describe("GC planning", () => {
  const t = parseTable(fixture("ops/default-v4.rules"));

  it("deletes only the orphan chains of its own network, with their jumps, in one transaction", () => {
    const plan = planGc(t, 4, (network, id) => network === "cbr0" && id !== "abc123");
    expect(plan.orphans.map((o) => o.chain)).toEqual(["CNI-DN-7d8bb303737095628cf38"]);
    expect(plan.lines).toEqual([
      '-D CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \\"cbr0\\" id: \\"def456\\"" -m multiport --dports 5353 -j CNI-DN-7d8bb303737095628cf38',
      "-F CNI-DN-7d8bb303737095628cf38",
      "-X CNI-DN-7d8bb303737095628cf38",
    ]);
  });

  it("never touches a chain it cannot attribute, nor one someone else jumps to", () => {
    expect(planGc(parseTable(fixture("ops/longname-v4.rules")), 4, () => true).lines).toEqual([]);
    const referenced = parseTable(`${fixture("ops/default-v4.rules")}-A PREROUTING -j CNI-DN-7d8bb303737095628cf38\n`);
    const plan = planGc(referenced, 4, (n) => n === "cbr0");
    expect(plan.orphans.map((o) => o.containerId)).toEqual(["abc123"]);
    expect(plan.skipped[0]).toMatch(/def456.*referenced outside CNI-HOSTPORT-DNAT/);
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
