// Faults around a real ADD/DEL: iptables-restore failing or killed half-way (stand-ins first on PATH that wrap
// the real one), the plugin SIGKILLed during ADD, portmap missing or its chain deleted by hand, the node's
// address or kube-ipvs0 gone, and a flushed nat table before DEL. Each ends in the documented result (a CNI
// error or success, never a crash trace), and a failed ADD leaves both nat tables exactly as they were.
import { expect, it } from "vitest";
import { writeRecord } from "../../src/host/record.js";
import { stateDirFor } from "../support/conflists.js";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  type ChainRun,
  CLUSTER_IP,
  containerdMapping,
  describeRun,
  dnChainName,
  type Harness,
  IPVS_DEVICE,
  linesMentioning,
  type NatSnapshot,
  type NetConfList,
  NODE_IP1,
  NODE_IP2,
  natSave,
  outside,
  PLUGIN_TYPE,
  type PluginConf,
  podRuntime,
  type RuntimeConf,
  rulesIn,
  type StartPodOptions,
  UPLINK,
  withoutPlugin,
} from "../support/harness.js";
import { ipIn, nsRunOk } from "../support/netns.js";
import {
  CRASH_TRACE,
  createStandins,
  replaceChain,
  runPluginRaw,
  type StandinKind,
  waitInvocationsDone,
} from "../support/standins.js";

const MAPPINGS = [containerdMapping(8080, 80), containerdMapping(5353, 53, "udp")];

const snapshot = async (h: Harness): Promise<NatSnapshot> => ({
  v4: await natSave(h.topo.node, 4, h.iptables),
  v6: await natSave(h.topo.node, 6, h.iptables),
});

interface Prepared {
  list: NetConfList;
  rt: RuntimeConf;
  chain: string;
  /** The result of the plugins before ours. */
  prevResult: Record<string, unknown>;
  /** Both nat tables before our plugin runs. */
  before: NatSnapshot;
}

/** Creates a pod and runs the list up to (not including) portmap-hostip. */
async function prepare(
  h: Harness,
  name: string,
  hostip: Partial<PluginConf> = { defaultHostIP: "node" },
  pod: StartPodOptions = { portMappings: MAPPINGS },
): Promise<Prepared> {
  const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip });
  const p = await h.topo.addPod(name);
  const rt = podRuntime(p, pod);
  const at = list.plugins.findIndex((c) => c.type === PLUGIN_TYPE);
  const base = await h.cni.add(list, rt, { to: at });
  expect(base.ok, describeRun(base)).toBe(true);
  return {
    list,
    rt,
    chain: dnChainName(list.name, p.containerID),
    prevResult: base.result!,
    before: await snapshot(h),
  };
}

/** Runs only our plugin's ADD with the given PATH (stand-ins first). */
function oursWith(h: Harness, p: Prepared, path: string): Promise<ChainRun> {
  const at = p.list.plugins.findIndex((c) => c.type === PLUGIN_TYPE);
  return h.cni.add(p.list, p.rt, { from: at, prevResult: p.prevResult, path });
}

/** A failed run: a CNI error object on stdout, the given code(s), no crash trace. */
function expectCniError(run: ChainRun, codes: number[]): void {
  expect(run.ok, describeRun(run)).toBe(false);
  const failed = run.failed!;
  expect(failed.type).toBe(PLUGIN_TYPE);
  expect(failed.output, failed.stdout).toMatchObject({ msg: expect.any(String) });
  expect(codes, failed.stdout).toContain(failed.output!["code"]);
  expect(failed.stderr).not.toMatch(CRASH_TRACE);
}

async function delOk(h: Harness, p: Prepared): Promise<void> {
  const del = await h.cni.del(p.list, p.rt);
  expect(del.ok, describeRun(del)).toBe(true);
  for (const family of [4, 6] as const)
    expect(linesMentioning(await natSave(h.topo.node, family, h.iptables), p.chain)).toEqual([]);
}

const restoreFaults: {
  what: string;
  kinds: Partial<Record<"iptables-restore" | "ip6tables-restore", StandinKind>>;
  rollback: boolean;
}[] = [
  {
    what: "iptables-restore exits non-zero",
    kinds: { "iptables-restore": "fail", "ip6tables-restore": "fail" },
    rollback: false,
  },
  {
    what: "iptables-restore is killed mid-write",
    kinds: { "iptables-restore": "killed-mid-write", "ip6tables-restore": "killed-mid-write" },
    rollback: false,
  },
  {
    what: "ip6tables-restore exits non-zero after IPv4 was written",
    kinds: { "ip6tables-restore": "fail" },
    rollback: true,
  },
  {
    what: "ip6tables-restore is killed mid-write after IPv4 was written",
    kinds: { "ip6tables-restore": "killed-mid-write" },
    rollback: true,
  },
];

/** `-A`/`-D` lines of a restore payload, the command swapped: what undoes a swap of rules. */
const swappedBack = (payload: string): string => {
  const lines = payload.split("\n");
  const back = (from: string, to: string) => lines.filter((l) => l.startsWith(from)).map((l) => `${to}${l.slice(2)}`);
  return ["*nat", ...back("-A ", "-D"), ...back("-D ", "-A"), "COMMIT", ""].join("\n");
};

describeAsRoot.each([{ legacy: false }, { legacy: true }])("iptables-restore fails (legacy: $legacy)", ({ legacy }) => {
  const h = useHarness({ legacyIptables: legacy });

  // The container's first ADD swaps portmap's rules without reading them; a later one reads and replaces them.
  it.each(restoreFaults.flatMap((f, i) => [true, false].map((first) => ({ ...f, i, first }))))(
    "$what (first ADD: $first): ADD returns a CNI error, the nat tables are exactly as before",
    async ({ kinds, rollback, i, first }) => {
      const p = await prepare(h, `rf${i}${first ? "f" : "l"}`);
      if (!first) writeRecord(stateDirFor(h.topo.ipamDataDir), p.list.name, p.rt.containerID, "added");
      const standins = createStandins(h.topo.tmpDir, kinds, h.iptables.path);
      const run = await oursWith(h, p, standins.path);
      expectCniError(run, [5, 11]);
      const calls = await waitInvocationsDone(standins);
      expect(await snapshot(h)).toEqual(p.before);

      const restores = calls.filter((c) => c.program.endsWith("-restore"));
      // The fault did happen where it was meant to: a stand-in ran, and a killed one had started the real program.
      for (const c of restores.filter((c) => kinds[c.program as keyof typeof kinds] === "killed-mid-write"))
        expect(c.rc).toBe("killed");
      if (rollback) {
        // IPv4 was written (exit 0), then put back (exit 0) after IPv6 failed.
        const v4 = restores.filter((c) => c.program === "iptables-restore");
        expect(v4.map((c) => c.rc)).toEqual(["0", "0"]);
        const portmapV4 = rulesIn(p.before.v4, p.chain);
        if (first) {
          // The swap deleted exactly portmap's rules; putting back swaps the other way.
          expect(v4[0]!.stdin.split("\n").filter((l) => l.startsWith("-D "))).toEqual(
            portmapV4.map((l) => `-D${l.slice(2)}`),
          );
          expect(v4[1]!.stdin).toBe(swappedBack(v4[0]!.stdin));
        } else {
          expect(v4[1]!.stdin).toBe(["*nat", `:${p.chain} - [0:0]`, ...portmapV4, "COMMIT", ""].join("\n"));
        }
      }
      await delOk(h, p);
    },
  );
});

describeAsRoot("the plugin is SIGKILLed during ADD", () => {
  const h = useHarness();

  it("each nat table is then either wholly as before or wholly as after (12 kill points)", async () => {
    const p = await prepare(h, "kill");
    const standins = createStandins(h.topo.tmpDir);
    const ours = p.list.plugins.find((c) => c.type === PLUGIN_TYPE)!;
    const env = h.cni.pluginEnv("ADD", p.rt, standins.path);
    const input = JSON.stringify(h.cni.pluginStdin(p.list, ours, p.rt, p.prevResult));

    // The "after" state: one complete ADD.
    const full = await runPluginRaw(h.topo.node, { env, input });
    expect(full.code, full.stdout).toBe(0);
    const after = await snapshot(h);
    expect(after.v4).not.toEqual(p.before.v4);
    expect(after.v6).not.toEqual(p.before.v6);

    const outcomes: string[] = [];
    for (const delay of [0, 10, 20, 30, 40, 50, 60, 75, 90, 110, 140, 200]) {
      for (const family of [4, 6] as const)
        await replaceChain(h.topo.node, family, p.chain, rulesIn(family === 4 ? p.before.v4 : p.before.v6, p.chain));
      expect(await snapshot(h)).toEqual(p.before);
      const r = await runPluginRaw(h.topo.node, { env, input, killAfterMs: delay });
      await waitInvocationsDone(standins);
      const now = await snapshot(h);
      const state = (family: "v4" | "v6") =>
        now[family].join("\n") === p.before[family].join("\n")
          ? "before"
          : now[family].join("\n") === after[family].join("\n")
            ? "after"
            : "MIXED";
      outcomes.push(`${delay}ms ${r.signal ?? `exit ${r.code}`}: v4 ${state("v4")}, v6 ${state("v6")}`);
      expect(state("v4"), `IPv4 nat table after a SIGKILL at ${delay} ms:\n${now.v4.join("\n")}`).not.toBe("MIXED");
      expect(state("v6"), `IPv6 nat table after a SIGKILL at ${delay} ms:\n${now.v6.join("\n")}`).not.toBe("MIXED");
      if (r.signal === null) expect(r.code === 0 ? "after" : "before").toBe(state("v4"));
    }
    console.log(`SIGKILL during ADD:\n  ${outcomes.join("\n  ")}`);
    // The runtime's answer to a failed ADD is DEL: it works whatever state the kill left.
    await delOk(h, p);
  });
});

describeAsRoot("portmap missing or its chain gone", () => {
  const h = useHarness();

  it("portmap missing from the list: ADD fails with 102 (node default) and changes nothing", async () => {
    const list = withoutPlugin(
      bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } }),
      "portmap",
    );
    const started = await h.startPodObserved("nopm", list, { portMappings: MAPPINGS });
    expectCniError(started.add, [102]);
    expect(started.after).toEqual(started.before);
    const del = await h.cni.del(list, started.rt);
    expect(del.ok, describeRun(del)).toBe(true);
  });

  it('portmap missing from the list, defaultHostIP "any" and no annotation: nothing to do, ADD succeeds', async () => {
    const list = withoutPlugin(
      bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "any" } }),
      "portmap",
    );
    const started = await h.startPodObserved("nopm-any", list, { portMappings: MAPPINGS });
    expect(started.add.ok, describeRun(started.add)).toBe(true);
    expect(started.after).toEqual(started.before);
    const del = await h.cni.del(list, started.rt);
    expect(del.ok, describeRun(del)).toBe(true);
  });

  /** Deletes the pod's chain and the jumps to it, by hand, in both families. */
  async function deleteChainByHand(chain: string): Promise<void> {
    for (const bin of ["iptables", "ip6tables"]) {
      const listed = (await nsRunOk(h.topo.node, bin, ["-w", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT"]))
        .split("\n")
        .filter((l) => l.startsWith("-A "));
      const numbers = listed.flatMap((l, i) => (l.endsWith(`-j ${chain}`) ? [i + 1] : [])).reverse();
      for (const n of numbers)
        await nsRunOk(h.topo.node, bin, ["-w", "-t", "nat", "-D", "CNI-HOSTPORT-DNAT", String(n)]);
      await nsRunOk(h.topo.node, bin, ["-w", "-t", "nat", "-F", chain]);
      await nsRunOk(h.topo.node, bin, ["-w", "-t", "nat", "-X", chain]);
    }
  }

  it("portmap's chain deleted by hand before our ADD: 102, nothing changed; DEL then succeeds", async () => {
    const p = await prepare(h, "gone-add");
    await deleteChainByHand(p.chain);
    const before = await snapshot(h);
    expect(linesMentioning(before.v4, p.chain)).toEqual([]);
    const run = await oursWith(h, p, h.iptables.path ?? process.env["PATH"]!);
    expectCniError(run, [102]);
    expect(await snapshot(h)).toEqual(before);
    await delOk(h, p);
  });

  it("portmap's chain deleted by hand before DEL: DEL succeeds", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
    const { pod, rt, add } = await h.startPod("gone-del", list, { portMappings: MAPPINGS });
    expect(add.ok, describeRun(add)).toBe(true);
    const chain = dnChainName(list.name, pod.containerID);
    await deleteChainByHand(chain);
    const del = await h.cni.del(list, rt);
    expect(del.ok, describeRun(del)).toBe(true);
    for (const family of [4, 6] as const)
      expect(linesMentioning(await natSave(h.topo.node, family), chain)).toEqual([]);
  });
});

describeAsRoot("the node's addresses change under the plugin", () => {
  // The steps run in order, each taking something more away from the same node.
  const h = useHarness();
  let n = 0;

  async function addWith(hostip: Partial<PluginConf>, annotation?: string) {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip });
    const started = await h.startPodObserved(`addr${n++}`, list, {
      portMappings: [containerdMapping(8080, 80)],
      ...(annotation === undefined ? {} : { hostIPAnnotation: annotation }),
    });
    return { list, started, chain: dnChainName(list.name, started.pod.containerID) };
  }

  /** Started, scoped to 127.0.0.1 alone (only the pod's own chain changed), with the warning on stderr. */
  function expectClosed(r: Awaited<ReturnType<typeof addWith>>): void {
    expect(r.started.add.ok, describeRun(r.started.add)).toBe(true);
    expect(r.started.ours.stderr).toMatch(
      /warning: pod .*: hostPort 8080\/tcp: defaultHostIP "node" left no address of this node: it answers only on 127\.0\.0\.1 /,
    );
    expect(rulesIn(r.started.after.v4, r.chain).map((rule) => / -d (\S+)/.exec(rule)?.[1])).toEqual(
      Array(3).fill("127.0.0.1/32"),
    );
    expect(outside(r.started.after, r.list.name, r.started.pod.containerID)).toEqual(
      outside(r.started.before, r.list.name, r.started.pod.containerID),
    );
  }

  async function cleanup(r: Awaited<ReturnType<typeof addWith>>): Promise<void> {
    const del = await h.cni.del(r.list, r.started.rt);
    expect(del.ok, describeRun(del)).toBe(true);
    await h.topo.removePod(r.started.pod);
  }

  it("kube-ipvs0 missing: the node default still works; the old ClusterIP is refused (100)", async () => {
    await ipIn(h.topo.node, "link", "del", IPVS_DEVICE);
    const ok = await addWith({ defaultHostIP: "node" });
    expect(ok.started.add.ok, describeRun(ok.started.add)).toBe(true);
    expect(rulesIn(ok.started.after.v4, ok.chain).map((r) => / -d (\S+)/.exec(r)?.[1])).toEqual(
      [NODE_IP1, NODE_IP2, "127.0.0.1"].flatMap((ip) => Array(3).fill(`${ip}/32`)),
    );
    await cleanup(ok);
    const refused = await addWith({ defaultHostIP: "node" }, CLUSTER_IP);
    expectCniError(refused.started.add, [100]);
    expect(refused.started.after).toEqual(refused.started.before);
    await cleanup(refused);
  });

  it("an annotated address removed from the node: 100, nothing changed", async () => {
    await ipIn(h.topo.node, "addr", "del", `${NODE_IP2}/24`, "dev", UPLINK);
    const r = await addWith({ defaultHostIP: "node" }, NODE_IP2);
    expectCniError(r.started.add, [100]);
    expect(r.started.after).toEqual(r.started.before);
    await cleanup(r);
  });

  // Until issue 11 these two steps expected code 104 and an unchanged table: the default now never fails a
  // pod, which starts closed (127.0.0.1 only) with a warning.
  it("the default-route interface down: the node default starts the pod closed with a warning; an annotated address on it still works", async () => {
    await ipIn(h.topo.node, "link", "set", UPLINK, "down");
    const r = await addWith({ defaultHostIP: "node" });
    expectClosed(r);
    await cleanup(r);
    const annotated = await addWith({ defaultHostIP: "node" }, NODE_IP1);
    expect(annotated.started.add.ok, describeRun(annotated.started.add)).toBe(true);
    expect(new Set(rulesIn(annotated.started.after.v4, annotated.chain).map((r) => / -d (\S+)/.exec(r)?.[1]))).toEqual(
      new Set([`${NODE_IP1}/32`]),
    );
    await cleanup(annotated);
  });

  it("the interface removed: the node default starts the pod closed; 100 for its old address, nothing changed", async () => {
    await ipIn(h.topo.node, "link", "del", UPLINK);
    const r = await addWith({ defaultHostIP: "node" });
    expectClosed(r);
    await cleanup(r);
    const annotated = await addWith({ defaultHostIP: "node" }, NODE_IP1);
    expectCniError(annotated.started.add, [100]);
    expect(annotated.started.after).toEqual(annotated.started.before);
    await cleanup(annotated);
  });
});

describeAsRoot("firewall flushed before DEL", () => {
  const h = useHarness();

  it.each([
    { what: "-F (every nat chain flushed)", args: [["-F"]] },
    { what: "-F then -X (every user chain deleted)", args: [["-F"], ["-X"]] },
  ])("$what: DEL still succeeds and leaves nothing of the pod", async ({ args }) => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
    const { pod, rt, add } = await h.startPod(`flush${args.length}`, list, { portMappings: MAPPINGS });
    expect(add.ok, describeRun(add)).toBe(true);
    for (const bin of ["iptables", "ip6tables"])
      for (const a of args) await nsRunOk(h.topo.node, bin, ["-w", "-t", "nat", ...a]);
    const del = await h.cni.del(list, rt);
    expect(del.ok, describeRun(del)).toBe(true);
    for (const r of del.runs) expect(r.stderr).not.toMatch(CRASH_TRACE);
    const chain = dnChainName(list.name, pod.containerID);
    for (const family of [4, 6] as const)
      expect(linesMentioning(await natSave(h.topo.node, family), chain)).toEqual([]);
    const again = await h.cni.del(list, rt);
    expect(again.ok, describeRun(again)).toBe(true);
  });
});
