// reconcile planning and the UDP conntrack selection, on what real portmap and conntrack printed.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { planReconcile, type Wanted } from "../../src/backends/iptables-plan.js";
import type { Family } from "../../src/core/ip.js";
import { parseCacheFile } from "../../src/host/cache.js";
import { type NatTable, parseTable, rulesOf } from "../../src/iptables/table.js";
import { expectedChains } from "../../src/pipeline/attachment.js";
import {
  linesToPorts,
  parseConntrack,
  procConntrack,
  procSource,
  staleEntries,
  udpChanges,
} from "../../src/pipeline/conntrack.js";
import { cacheEntryJson } from "../support/result-cache.js";
import { CHAIN, chainOf, fixture, NODE, PORTMAP_VERSIONS, lines as print, rules as read } from "./fixtures.js";

const THREE = [
  { HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: "" },
  { HostPort: 8443, ContainerPort: 443, Protocol: "tcp", HostIP: "192.0.2.10" },
  { HostPort: 5353, ContainerPort: 53, Protocol: "udp", HostIP: "0.0.0.0" },
];
// What record.sh gave portmap: pod 10.244.1.5/24 and 2001:db8:244:1::5/64 on eth0.
const RESULT = {
  cniVersion: "1.0.0",
  interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
  ips: [
    { address: "10.244.1.5/24", interface: 0 },
    { address: "2001:db8:244:1::5/64", interface: 0 },
  ],
};

function attachment(o: { portmap?: object; hostip?: object | false; mappings?: object[]; annotation?: string }) {
  const plugins = [
    { type: "bridge" },
    { type: "portmap", capabilities: { portMappings: true }, ...(o.portmap ?? {}) },
    ...(o.hostip === false
      ? []
      : [
          {
            type: "portmap-hostip",
            capabilities: { portMappings: true, "io.kubernetes.cri.pod-annotations": true },
            ...(o.hostip ?? {}),
          },
        ]),
  ];
  const annotations = o.annotation === undefined ? {} : { "portmap-hostip/host-ip": o.annotation };
  return parseCacheFile(
    cacheEntryJson({
      list: { name: "cbr0", cniVersion: "1.0.0", plugins },
      containerID: "abc123",
      ifName: "eth0",
      args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=a",
      capabilityArgs: { portMappings: o.mappings ?? THREE, "io.kubernetes.cri.pod-annotations": annotations },
      result: RESULT,
    }),
    "f",
    0,
  );
}

const wanted = (a: ReturnType<typeof attachment>, family: Family): Wanted[] =>
  expectedChains(a, NODE)
    .filter((e) => e.family === family)
    .map((expected) => ({ label: "default/a", key: "k", expected }));

/** What iptables-restore --noflush does with the plan's lines, on the table model. */
function apply(table: NatTable, lines: readonly string[]): NatTable {
  const out: NatTable = {
    chains: new Set(table.chains),
    rules: new Map([...table.rules].map(([c, r]) => [c, [...r]])),
  };
  for (const line of lines) {
    const [verb = "", chain = ""] = line.split(" ", 2);
    const rest = line.slice(verb.length + chain.length + 2);
    if (verb.startsWith(":")) {
      out.chains.add(verb.slice(1));
      out.rules.set(verb.slice(1), []);
    } else if (verb === "-A") out.rules.set(chain, [...rulesOf(out, chain), ...read([line])]);
    else if (verb === "-I")
      out.rules.set(chain, [...read([`-A ${chain} ${rest.replace(/^1 /, "")}`]), ...rulesOf(out, chain)]);
    else if (verb === "-D")
      out.rules.set(
        chain,
        rulesOf(out, chain).filter((r) => print([r])[0] !== `-A ${chain} ${rest}`),
      );
    else throw new Error(`unexpected line ${line}`);
  }
  return out;
}

const FLUSHED = parseTable("-P PREROUTING ACCEPT\n-P INPUT ACCEPT\n-P OUTPUT ACCEPT\n-P POSTROUTING ACCEPT\n");
const sameTable = (a: NatTable, b: NatTable) => {
  expect([...a.chains].sort()).toEqual([...b.chains].sort());
  for (const c of b.chains) expect(rulesOf(a, c), c).toEqual(rulesOf(b, c));
};

describe("reconcile planning", () => {
  it("leaves a correct attachment alone and writes nothing", () => {
    for (const family of [4, 6] as const) {
      const plan = planReconcile(
        parseTable(fixture(`ops/markbit-v${family}.rules`)),
        family,
        wanted(attachment({ portmap: { markMasqBit: 5 }, hostip: false }), family),
      );
      expect(plan).toMatchObject({ lines: [], correct: ["default/a"], rebuilt: [] });
    }
  });

  it.each(PORTMAP_VERSIONS)(
    "after a flush, rebuilds exactly what portmap $portmap wrote: shared chains, top-level jumps, pod chain and its jumps",
    ({ dir }) => {
      for (const [name, portmap] of [
        ["markbit", { markMasqBit: 5 }],
        ["nosnat", { snat: false }],
        [
          "conditions",
          {
            conditionsV4: ["!", "-s", "198.51.100.0/24", "-m", "addrtype", "--dst-type", "LOCAL"],
            conditionsV6: ["!", "-i", "cni0"],
          },
        ],
      ] as const) {
        for (const family of [4, 6] as const) {
          const plan = planReconcile(FLUSHED, family, wanted(attachment({ portmap, hostip: false }), family));
          sameTable(apply(FLUSHED, plan.lines), parseTable(fixture(`ops/${dir}${name}-v${family}.rules`)));
          expect(plan.lines.filter((l) => l.startsWith(":"))).toEqual(
            plan.lines.slice(0, plan.lines.filter((l) => l.startsWith(":")).length),
          );
        }
      }
    },
  );

  it("puts portmap's POSTROUTING jump first, where portmap inserts it, ahead of others' masquerade rules", () => {
    const withMasq = parseTable("-P POSTROUTING ACCEPT\n-A POSTROUTING -s 10.244.1.0/24 -j MASQUERADE\n");
    const after = apply(withMasq, planReconcile(withMasq, 4, wanted(attachment({ hostip: false }), 4)).lines);
    expect(print(rulesOf(after, "POSTROUTING"))[0]).toBe(
      '-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ',
    );
  });

  it("scopes the rebuilt chain by our policy: byte for byte what portmap writes for that hostIP", () => {
    const a = attachment({
      mappings: [{ HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: "" }],
      annotation: "192.0.2.11",
    });
    const plan = planReconcile(parseTable(fixture("ops/default-v4.rules")), 4, wanted(a, 4));
    expect(plan.rebuilt.map((r) => r.before)).toEqual([rulesOf(parseTable(fixture("ops/default-v4.rules")), CHAIN)]);
    expect(print(rulesOf(apply(parseTable(fixture("ops/default-v4.rules")), plan.lines), CHAIN))).toEqual(
      chainOf("scoped-192.0.2.11-v4"),
    );
  });

  it("replaces a pod's wrong jumps by its right ones, and leaves other pods' jumps alone", () => {
    const table = parseTable(fixture("ops/default-v4.rules").replace("--dports 8080,8443 -j", "--dports 8080 -j"));
    const plan = planReconcile(table, 4, wanted(attachment({ hostip: false }), 4));
    expect(plan.lines.filter((l) => !l.startsWith("-A CNI-DN-") && !l.startsWith(":"))).toEqual([
      '-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"cbr0\\" id: \\"abc123\\"" -m multiport --dports 8080 -j CNI-DN-3e9a3d0f9583cdc0e7133',
      '-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"cbr0\\" id: \\"abc123\\"" -m multiport --dports 8080,8443 -j CNI-DN-3e9a3d0f9583cdc0e7133',
    ]);
    expect(rulesOf(apply(table, plan.lines), "CNI-HOSTPORT-DNAT").slice(1, 3)).toEqual(
      rulesOf(table, "CNI-HOSTPORT-DNAT").slice(2, 4),
    );
  });

  it("skips a pod whose external mark chain is gone, and one whose host IP the policy refuses now", () => {
    const plan = planReconcile(
      FLUSHED,
      4,
      wanted(attachment({ portmap: { externalSetMarkChain: "KUBE-MARK-MASQ" }, hostip: false }), 4),
    );
    expect(plan.skipped).toEqual([
      "default/a: its externalSetMarkChain KUBE-MARK-MASQ does not exist (not portmap's to create)",
    ]);
    expect(plan.lines).toEqual([]);
    expect(() => expectedChains(attachment({ annotation: "198.51.100.7" }), NODE)).toThrow(
      /198\.51\.100\.7.*not an address of this node/,
    );
  });
});

describe("stale UDP conntrack entries", () => {
  const entries = parseConntrack(fixture("ops/conntrack-v4.txt"));
  const unscoped = chainOf("reference-v4");
  const scopedTo = (ip: string) =>
    unscoped.map((r) => (r.includes("udp") ? r.replace(/^(-A \S+( -s \S+)?)/, `$1 -d ${ip}/32`) : r));

  it("reads conntrack's listing: original tuple and where replies come from", () => {
    expect(entries).toEqual([
      { src: "192.0.2.10", dst: "192.0.2.10", sport: 40000, dport: 5353, replyTarget: "10.244.1.5:53" },
      { src: "192.0.2.10", dst: "192.0.2.11", sport: 40000, dport: 5353, replyTarget: "192.0.2.11:5353" },
    ]);
    expect(parseConntrack(fixture("ops/conntrack-v6.txt"))[0]?.replyTarget).toBe("[2001:db8:244:1::5]:53");
  });

  it("reads the kernel's /proc/net/nf_conntrack as the tool lists it, per family", () => {
    const proc = fixture("ops/nf_conntrack.txt");
    const sorted = (e: ReturnType<typeof parseConntrack>) =>
      [...e].sort((a, b) => `${a.dst}:${a.dport}`.localeCompare(`${b.dst}:${b.dport}`));
    // Every UDP flow of the family; the tool's fixtures hold those of port 5353.
    expect(sorted(parseConntrack(procConntrack(proc, 4)).filter((e) => e.dport === 5353))).toEqual(sorted(entries));
    expect(parseConntrack(procConntrack(proc, 4))).toHaveLength(3);
    expect(parseConntrack(procConntrack(proc, 6))).toEqual(parseConntrack(fixture("ops/conntrack-v6.txt")));
  });

  it("parses only the lines of flows to the ports asked for (not 53 for 5353, nor 5354)", () => {
    const proc = fixture("ops/nf_conntrack.txt");
    expect(parseConntrack(procConntrack(linesToPorts(proc, [5353]), 4))).toEqual(
      parseConntrack(procConntrack(proc, 4)).filter((e) => e.dport === 5353),
    );
    expect(linesToPorts(proc, [53])).toBe("");
    expect(linesToPorts(proc, [5353, 5354]).split("\n")).toHaveLength(4);
  });

  it("reads the kernel's table once for every family that asks, and not when it holds too many flows", () => {
    const dir = mkdtempSync(join(tmpdir(), "pmh-ct-"));
    try {
      const [table, count] = [join(dir, "nf_conntrack"), join(dir, "count")];
      writeFileSync(table, fixture("ops/nf_conntrack.txt"));
      writeFileSync(count, "4\n");
      const source = procSource(table, count);
      const first = source();
      writeFileSync(table, "");
      expect([first, source()]).toEqual([fixture("ops/nf_conntrack.txt"), fixture("ops/nf_conntrack.txt")]);
      writeFileSync(count, "5001\n");
      expect(procSource(table, count)()).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("only UDP ports whose rules changed are looked at", () => {
    expect(udpChanges(read(unscoped), read(unscoped))).toEqual([]);
    expect(udpChanges(read(unscoped), read(scopedTo("192.0.2.11"))).map((c) => c.hostPort)).toEqual([5353]);
  });

  it("drops the flow the old rule sent to the pod from an address no longer mapped, and the one a now-mapped address sent elsewhere", () => {
    const [change] = udpChanges(read(unscoped), read(scopedTo("192.0.2.11")));
    expect(staleEntries(entries, change!).map((e) => e.dst)).toEqual(["192.0.2.10", "192.0.2.11"]);
  });

  it("keeps flows that already go where the rules say", () => {
    const [change] = udpChanges(read(unscoped), read(scopedTo("192.0.2.10")));
    expect(staleEntries(entries, change!)).toEqual([]);
  });

  it("after a pod re-creation (new pod IP), drops the flows to the old pod", () => {
    const [change] = udpChanges([], read(unscoped.map((r) => r.replace("10.244.1.5:53", "10.244.1.9:53"))));
    expect(staleEntries(entries, change!).map((e) => e.dst)).toEqual(["192.0.2.10", "192.0.2.11"]);
  });
});
