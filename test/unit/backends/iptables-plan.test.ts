// The iptables backend's plans for the nat table (pure): reconcile (a flushed table rebuilt byte for byte as
// portmap wrote it, scoped by our policy), a pass's dead chains, and GC, on what real portmap wrote.
import { describe, expect, it } from "vitest";
import { emptyOutcome } from "../../../src/backends/backend.js";
import { planDead, planGc, planReconcile, type Wanted } from "../../../src/backends/iptables-plan.js";
import type { Family } from "../../../src/core/ip.js";
import { parseCacheFile } from "../../../src/host/cache.js";
import { type NatTable, parseTable, rulesOf } from "../../../src/iptables/table.js";
import { formatRule } from "../../../src/iptables/text.js";
import { changeLines } from "../../../src/ops/report.js";
import { expectedChains, livePorts } from "../../../src/pipeline/attachment.js";
import { cacheEntryJson } from "../../support/result-cache.js";
import { cachedPod as pod } from "../cached-pods.js";
import { CHAIN, chainOf, fixture, NODE, PORTMAP_VERSIONS, lines as print, rules as read } from "../fixtures.js";

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
    } else if (verb === "-F") {
      if (!out.chains.has(chain)) throw new Error(`line ${line} failed: No chain/target/match by that name`);
      out.rules.set(chain, []);
    } else if (verb === "-N") {
      if (out.chains.has(chain)) throw new Error(`line ${line} failed: Chain already exists`);
      out.chains.add(chain);
      out.rules.set(chain, []);
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
          const creates = plan.lines.filter((l) => /^(:|-N |-F )/.test(l));
          expect(creates).toEqual(plan.lines.slice(0, creates.length));
        }
      }
    },
  );

  it("creates a chain that was absent when read with -N: a table restored since fails the write, is not flushed", () => {
    const a = attachment({ hostip: false });
    const plan = planReconcile(FLUSHED, 4, wanted(a, 4));
    expect(plan.lines.filter((l) => l.startsWith(":"))).toEqual([]);
    expect(plan.lines).toEqual(
      expect.arrayContaining(["-N CNI-HOSTPORT-DNAT", `-N ${wanted(a, 4)[0]?.expected.chain}`]),
    );
    const restored = parseTable(fixture("ops/default-v4.rules"));
    expect(() => apply(restored, plan.lines)).toThrow(/Chain already exists/);
  });

  it("rewrites a chain that was there when read with -F: gone since (portmap's DEL), the write fails whole", () => {
    const unscoped = parseTable(fixture("ops/default-v4.rules"));
    const a = attachment({});
    const plan = planReconcile(unscoped, 4, wanted(a, 4));
    const chain = wanted(a, 4)[0]?.expected.chain as string;
    expect(plan.lines).toContain(`-F ${chain}`);
    const deleted: NatTable = {
      chains: new Set([...unscoped.chains].filter((c) => c !== chain)),
      rules: unscoped.rules,
    };
    expect(() => apply(deleted, plan.lines)).toThrow(/No chain/);
  });

  it("asks for a second look at a pod whose chain or jumps alone are gone, not after a flush (with or without -X)", () => {
    const asked: boolean[] = [];
    const a = attachment({ hostip: false });
    planReconcile(FLUSHED, 4, wanted(a, 4), (_w, alone) => asked.push(alone) > 0);
    const others = parseTable(fixture("ops/default-v4.rules"));
    const chain = wanted(a, 4)[0]?.expected.chain as string;
    const without: NatTable = { chains: new Set([...others.chains].filter((c) => c !== chain)), rules: others.rules };
    planReconcile(without, 4, wanted(a, 4), (_w, alone) => asked.push(alone) > 0);
    // `iptables -t nat -F`: every rule gone, the chains kept.
    planReconcile({ chains: others.chains, rules: new Map() }, 4, wanted(a, 4), (_w, alone) => asked.push(alone) > 0);
    expect(asked).toEqual([false, true, false]);
  });

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

describe("a pass's plan on a recorded table (portmap's chain for container abc123, hostPorts 8080, 8443, 5353)", () => {
  // iptables-save → the `iptables -S` form parseTable reads.
  const table = parseTable(
    fixture("iptables/reference-v4.save")
      .split("\n")
      .map((l) => (l.startsWith(":") ? `-N ${l.slice(1).split(" ")[0]}` : l))
      .join("\n"),
  );
  const wantedOf = (id: string, hostPort: number): Wanted[] => {
    const wanted = expectedChains(pod(id, hostPort), NODE)
      .filter((e) => e.family === 4)
      .map((expected) => ({ label: id, key: id, expected }));
    expect(wanted).toHaveLength(1);
    return wanted;
  };
  const dead = () => "dead" as const;

  it("deletes at once a dead chain that takes a live pod's port, with its jumps", () => {
    const asked: Array<[string, boolean]> = [];
    const plan = planDead(
      table,
      4,
      wantedOf("def456", 8080),
      livePorts([pod("def456", 8080)], () => true),
      dead,
      (_f, chain, conflicting) => {
        asked.push([chain, conflicting]);
        return conflicting;
      },
      new Set(["cbr0"]),
    );
    expect(asked).toEqual([[CHAIN, true]]);
    expect(plan.lines).toEqual([
      ...table.rules.get("CNI-HOSTPORT-DNAT")!.map((r) => formatRule(r, "-D")),
      `-F ${CHAIN}`,
      `-X ${CHAIN}`,
    ]);
    expect(changeLines({ ...emptyOutcome("iptables", 4), removed: plan.removed, leftAlone: plan.leftAlone })).toEqual([
      `deleted dead ${CHAIN} (network cbr0, container abc123) and 2 jump(s)`,
    ]);
  });

  it("leaves a dead chain that takes no live pod's port to the grace, and never judges an ADD under way or another network", () => {
    const asked: Array<[string, boolean]> = [];
    const later = planDead(
      table,
      4,
      wantedOf("def456", 9090),
      livePorts([pod("def456", 9090)], () => true),
      dead,
      (_f, chain, conflicting) => {
        asked.push([chain, conflicting]);
        return false;
      },
      new Set(["cbr0"]),
    );
    expect([asked, later.lines, later.undecided]).toEqual([[[CHAIN, false]], [], 1]);
    const never = () => {
      throw new Error("asked");
    };
    expect(planDead(table, 4, [], new Set(), () => "adding", never, new Set(["cbr0"])).lines).toEqual([]);
    expect(planDead(table, 4, [], new Set(), dead, never, new Set(["other"])).lines).toEqual([]);
  });

  it("counts the port of a live pod of portmap's nftables backend, not only this backend's: the dead chain goes at once", () => {
    const live = [pod("def456", 8080, { backend: "nftables" }), pod("ghi789", 9090)];
    expect([...livePorts(live, (a) => a.containerId === "def456")]).toEqual(["tcp/8080"]);
    const asked: boolean[] = [];
    const plan = planDead(
      table,
      4,
      [],
      livePorts(live, () => true),
      dead,
      (_f, _chain, conflicting) => {
        asked.push(conflicting);
        return conflicting;
      },
      new Set(["cbr0"]),
    );
    expect(asked).toEqual([true]);
    expect(plan.lines).toContain(`-X ${CHAIN}`);
  });

  it("judges the chain of a container whose DEL is recorded also in a network the cache names no more", () => {
    const plan = planDead(
      table,
      4,
      [],
      new Set(["tcp/8080"]),
      () => "deleting",
      (_f, _chain, c, d) => c && d,
      new Set(),
    );
    expect([plan.lines.includes(`-X ${CHAIN}`), plan.undecided]).toEqual([true, 1]);
  });

  it("lets a chain that needs a rebuild wait when the pass may not rebuild it yet", () => {
    const plan = planReconcile(table, 4, wantedOf("def456", 9090), () => false);
    expect(plan.waiting).toEqual(["def456"]);
    expect(plan.commands).toEqual([]);
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
