// Where a pass keeps each live pod on a node with both iptables variants (and portmap's nftables backend): the nat
// table holding its rules; with its rules gone, the one its portmap writes to as the pod, the operator, the other
// pods' ADDs, portmap's chains or the tables that exist tell — never a guess, never kubelet's hint.
import { describe, expect, it } from "vitest";
import type { LiveAttachment, NodeRules } from "../../../src/backends/backend.js";
import { iptablesBackend } from "../../../src/backends/iptables.js";
import { natRules } from "../../../src/backends/iptables-node.js";
import { nftablesBackend } from "../../../src/backends/nftables.js";
import { nftRules } from "../../../src/backends/nftables-node.js";
import type { IptablesVariant } from "../../../src/core/node.js";
import { parseCacheFile } from "../../../src/host/cache.js";
import { recordKey } from "../../../src/host/record.js";
import { portmapChainName } from "../../../src/iptables/chain-name.js";
import { nat } from "../../../src/iptables/nat.js";
import { type NodeEvidence, placer } from "../../../src/ops/placement.js";
import { cacheEntryJson } from "../../support/result-cache.js";

const NETWORK = "cbr0";
const attachment = (id: string, portmap: Record<string, unknown> = {}) =>
  parseCacheFile(
    cacheEntryJson({
      list: {
        name: NETWORK,
        cniVersion: "1.0.0",
        plugins: [{ type: "bridge" }, { type: "portmap", capabilities: { portMappings: true }, ...portmap }],
      },
      containerID: id,
      ifName: "eth0",
      result: { cniVersion: "1.0.0", ips: [{ address: "10.244.1.5/24" }] },
    }),
    `/cache/results/${NETWORK}-${id}-eth0`,
    0,
  );
const live = (id: string, iptables?: IptablesVariant, portmap?: Record<string, unknown>): LiveAttachment => ({
  key: recordKey(NETWORK, id),
  label: id,
  attachment: attachment(id, portmap),
  record: { network: NETWORK, containerId: id, state: "added", at: 0, ...(iptables ? { iptables } : {}) },
});

/**
 * One variant's nat table (IPv4) holding portmap's shared chains (or not) and these pods' chains; `absent`: a
 * legacy table nothing ever wrote to (read as "").
 */
function variant(
  v: IptablesVariant,
  opts: { shared?: boolean; pods?: string[]; kubeProxy?: boolean; absent?: boolean } = {},
): NodeRules {
  if (opts.absent) return natRules(iptablesBackend(v), nat(v), new Map([[4, ""]]));
  const lines = [
    "-P PREROUTING ACCEPT",
    ...(opts.kubeProxy ? ["-N KUBE-SERVICES", "-A PREROUTING -j KUBE-SERVICES"] : []),
    ...(opts.shared ? ["-N CNI-HOSTPORT-DNAT"] : []),
    ...(opts.pods ?? []).map((id) => `-N ${portmapChainName(NETWORK, id)}`),
  ];
  return natRules(iptablesBackend(v), nat(v), new Map([[4, `${lines.join("\n")}\n`]]));
}
const nftables = (ids: string[] = []): NodeRules =>
  nftRules(nftablesBackend, [
    {
      family: 4,
      chain: "hostports",
      present: ids.length > 0,
      rules: ids.map((id) => ({
        chain: "hostports",
        matches: [{ kind: "comment", text: id }],
        target: { kind: "dnat", to: "10.244.1.5:80" },
      })),
    },
  ]);

/** The variants ADDs of `network` recorded. */
const ran = (network: string, ...variants: IptablesVariant[]) => new Map([[network, new Set(variants)]]);

const place = (
  read: NodeRules[],
  l: LiveAttachment,
  node: Partial<NodeEvidence> = {},
  remembered = new Map<string, string>(),
) => {
  const where = placer(read, { stated: undefined, recorded: new Map(), ...node }, remembered)(l);
  return where && ("refused" in where ? where : { backend: where.backend.name, held: where.held });
};

describe("where a pass keeps a live pod", () => {
  it("in the nat table that holds its chain, whatever else the node says", () => {
    const read = [variant("legacy", { shared: true, pods: ["a"] }), variant("nft", { kubeProxy: true }), nftables()];
    expect(place(read, live("a", "nft"), { stated: "nft", recorded: ran("other", "nft") })).toEqual({
      backend: "iptables-legacy",
      held: true,
    });
    expect(place([variant("legacy"), variant("nft", { shared: true, pods: ["a"] })], live("a"))).toEqual({
      backend: "iptables-nft",
      held: true,
    });
  });

  it("with its chain in both variants, the copy portmap uses as far as anything says; else the first", () => {
    const both = [variant("legacy", { shared: true, pods: ["a"] }), variant("nft", { shared: true, pods: ["a"] })];
    expect(place(both, live("a", "nft"))).toMatchObject({ backend: "iptables-nft" });
    expect(place(both, live("a"), { stated: "nft" })).toMatchObject({ backend: "iptables-nft" });
    expect(place(both, live("a"))).toMatchObject({ backend: "iptables-legacy" });
  });

  it("after a flush took its chain: where this keeper saw it, else where its ADD ran, else --iptables, else where the node's other ADDs ran", () => {
    const flushed = [variant("legacy"), variant("nft", { kubeProxy: true }), nftables()];
    const seen = new Map([[recordKey(NETWORK, "a"), "iptables-legacy"]]);
    expect(place(flushed, live("a", "nft"), { stated: "nft" }, seen)).toEqual({
      backend: "iptables-legacy",
      held: false,
    });
    expect(place(flushed, live("a", "legacy"), { stated: "nft", recorded: ran("other", "nft") })).toMatchObject({
      backend: "iptables-legacy",
    });
    expect(place(flushed, live("a"), { stated: "legacy", recorded: ran("other", "nft") })).toMatchObject({
      backend: "iptables-legacy",
    });
    expect(place(flushed, live("a"), { recorded: ran("other", "legacy") })).toMatchObject({
      backend: "iptables-legacy",
    });
  });

  it("else where its network's other ADDs ran, before the node's others (a network whose plugins run another iptables)", () => {
    const flushed = [variant("legacy", { shared: true }), variant("nft", { shared: true, kubeProxy: true })];
    const recorded = new Map([...ran(NETWORK, "nft"), ...ran("legnet", "legacy")]);
    expect(place(flushed, live("a"), { recorded })).toMatchObject({ backend: "iptables-nft" });
    expect(place(flushed, live("a"), { recorded: ran("legnet", "legacy", "nft") })).toMatchObject({
      refused: expect.stringContaining("the node's ADDs ran both"),
    });
  });

  it("else in the one variant holding portmap's chains, else in the one whose nat table exists at all", () => {
    const sharedLeft = [variant("legacy", { shared: true }), variant("nft", { kubeProxy: true })];
    expect(place(sharedLeft, live("a"))).toMatchObject({ backend: "iptables-legacy" });
    // A node where nothing ever wrote to legacy's nat table: its CNI plugins run iptables-nft.
    expect(place([variant("legacy", { absent: true }), variant("nft")], live("a"))).toMatchObject({
      backend: "iptables-nft",
    });
  });

  it("never in a table nothing names: left without rules, saying why and what settles it", () => {
    const neither = place([variant("legacy"), variant("nft", { kubeProxy: true })], live("a"));
    expect(neither).toEqual({
      refused:
        "its hostPort rules are in no nat table, and nothing tells which iptables its portmap runs (no ADD here recorded its iptables, neither iptables-legacy nor iptables-nft holds portmap's chains, both nat tables exist): left without rules until --iptables legacy or --iptables nft says which",
    });
    // A node switching variants: portmap's chains in both, and kube-proxy's rules in both too.
    const migrating = [
      variant("legacy", { shared: true, kubeProxy: true, pods: ["b"] }),
      variant("nft", { shared: true, kubeProxy: true, pods: ["c"] }),
    ];
    expect(place(migrating, live("a"), { recorded: ran("other", "legacy", "nft") })).toMatchObject({
      refused: expect.stringContaining(
        "(the node's ADDs ran both, iptables-legacy and iptables-nft both hold portmap's chains, both nat tables exist)",
      ),
    });
    expect(place(migrating, live("a", "nft"))).toMatchObject({ backend: "iptables-nft" });
  });

  it("a pod of portmap's nftables backend in its tables; one nat table on PATH takes every other pod", () => {
    const read = [variant("legacy"), variant("nft"), nftables(["n"])];
    expect(place(read, live("n"))).toEqual({ backend: "nftables", held: true });
    expect(place(read, live("m", undefined, { backend: "nftables" }))).toEqual({ backend: "nftables", held: false });
    const pathOnly = [natRules(iptablesBackend(), nat(), new Map([[4, "-P PREROUTING ACCEPT\n"]])), nftables()];
    expect(place(pathOnly, live("a", "legacy"))).toEqual({ backend: "iptables", held: false });
    expect(place([nftables()], live("a"))).toBeUndefined();
  });
});
