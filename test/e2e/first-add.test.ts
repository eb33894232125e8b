// A container's first ADD swaps portmap's rules for the scoped ones without reading them: one iptables-restore
// per family deletes each rule portmap writes with its default options and appends the scoped ones. The chain is
// the one the read-and-rewrite gives (a later ADD, which reads, changes nothing). When portmap's rules are not
// those (its options differ), the swap changes nothing and the ADD reads the chain and rewrites it, and the
// network's next first ADDs read at once. On a node with many local addresses the ADD reads first (a restore
// line's port costs a dump of every address there). A UDP flow portmap's unscoped rule caught in the moment
// before our ADD loses its conntrack entry.
// Our ADD runs with logging stand-ins first on its PATH (after the plugins before it ran without them): the
// iptables calls it makes are seen.
import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { eventually, IPTABLES_VARIANTS, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  CLUSTER_IP,
  containerdMapping,
  describeRun,
  dnChainName,
  type Harness,
  IS_ROOT,
  type NetConfList,
  NODE_IP1,
  NODE_IP6,
  PLUGIN_TYPE,
  type Pod,
  type PortMapping,
  podRulesIn,
  podRuntime,
  portmapVariant,
  REPO_ROOT,
  snapshot,
  whoAnswers,
} from "../support/harness.js";
import { nsRunOk, spawnInNs, stopChild } from "../support/netns.js";
import { manyServiceIps } from "../support/shapes.js";
import { createStandins, waitInvocationsDone } from "../support/standins.js";

const UDP_STREAM = join(REPO_ROOT, "test/support/udp-stream.mjs");
const mappings = [containerdMapping(8080, 80), containerdMapping(5353, 53, "udp")];

const reads = (calls: readonly string[]) => calls.filter((c) => /^ip6?tables -w 5 -t nat -S /.test(c));
const restores = (calls: readonly string[], family: 4 | 6) =>
  calls.filter((c) => c.startsWith(family === 4 ? "iptables-restore " : "ip6tables-restore "));

/** A pod and the plugins before ours, then `before` (e.g. a rule put in by hand), then our ADD alone, logged. */
async function firstAdd(
  h: Harness,
  name: string,
  list: NetConfList,
  portMappings: PortMapping[],
  before: (chain: string, pod: Pod) => Promise<void> = async () => {},
) {
  const at = list.plugins.findIndex((p) => p.type === PLUGIN_TYPE);
  const pod = await h.topo.addPod(name);
  const rt = podRuntime(pod, { portMappings });
  const base = await h.cni.add(list, rt, { to: at });
  expect(base.ok, describeRun(base)).toBe(true);
  await before(dnChainName(list.name, pod.containerID), pod);
  /** Our ADD from portmap's result: its iptables calls as `program arg …`. */
  const ours = async () => {
    const standins = createStandins(h.topo.tmpDir, {}, h.iptables.path);
    const add = await h.cni.add(list, rt, { from: at, prevResult: base.result!, path: standins.path });
    expect(add.ok, describeRun(add)).toBe(true);
    return (await waitInvocationsDone(standins)).map((c) => [c.program, ...c.argv].join(" "));
  };
  const calls = await ours();
  await h.topo.servePod(pod, { tcp: [80] });
  return { pod, calls, again: ours };
}

// The swap is of portmap's iptables rules: with its nftables backend only the last test runs.
const nftablesBackend = portmapVariant().backend === "nftables";

describe.skipIf(!IS_ROOT || nftablesBackend).each(IPTABLES_VARIANTS)(
  "a container's first ADD, $variant",
  ({ legacy }) => {
    const h = useHarness({ legacyIptables: legacy });

    it("reads none of portmap's rules: one iptables-restore per family, the chains a read-and-rewrite gives", async () => {
      const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
      const { pod, calls, again } = await firstAdd(h, "a", list, mappings);
      expect(reads(calls)).toEqual([]);
      expect([restores(calls, 4).length, restores(calls, 6).length]).toEqual([1, 1]);
      const once = await snapshot(h.topo, h.iptables);
      for (const family of [4, 6] as const) {
        const rules = podRulesIn(once, list.name, pod.containerID, family);
        expect(rules.length).toBeGreaterThan(0);
        expect(rules.every((r) => / -d \S+ /.test(r))).toBe(true);
      }
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8080)).toBe("pod-a");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8080)).toBe("pod-a");

      // Our ADD again (the container has a record now): it reads both chains and finds nothing to change.
      const second = await again();
      expect(reads(second)).toHaveLength(2);
      expect([...restores(second, 4), ...restores(second, 6)]).toEqual([]);
      expect(await snapshot(h.topo, h.iptables)).toEqual(once);
    });

    it("portmap without snat: the swap changes nothing, the ADD reads and scopes; the network's next first ADDs read at once until one finds portmap's defaults", async () => {
      // A state directory of its own: the hint this network's read leaves must not reach the other tests.
      const stateDir = join(h.topo.tmpDir, "nosnat-state");
      const list = bridgeConflist({
        stateDir,
        dataDir: h.topo.ipamDataDir,
        portmap: { snat: false },
        hostip: { defaultHostIP: "node" },
      });
      const { pod, calls } = await firstAdd(h, "b", list, [containerdMapping(8081, 80)]);
      expect(reads(calls)).toHaveLength(1);
      // The refused swap, then the write.
      expect(restores(calls, 4)).toHaveLength(2);
      const rules = podRulesIn(await snapshot(h.topo, h.iptables), list.name, pod.containerID, 4);
      expect(rules.some((r) => r.includes("SETMARK"))).toBe(false);
      expect(rules.filter((r) => r.includes("-j DNAT")).every((r) => / -d \S+ /.test(r))).toBe(true);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8081)).toBe("pod-b");
      // The read found other rules than the swap takes: the network's next pod does not try it.
      const next = await firstAdd(h, "b2", list, [containerdMapping(8082, 80)]);
      expect([reads(next.calls).length, restores(next.calls, 4).length]).toEqual([1, 1]);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8082)).toBe("pod-b2");
      // portmap with its defaults again: the next first ADD reads, finds what the swap takes, and the one after swaps.
      const defaults = bridgeConflist({ stateDir, dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
      expect(reads((await firstAdd(h, "b3", defaults, [containerdMapping(8083, 80)])).calls)).toHaveLength(1);
      expect(reads((await firstAdd(h, "b4", defaults, [containerdMapping(8084, 80)])).calls)).toEqual([]);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8084)).toBe("pod-b4");
    });

    it("a UDP flow to the ClusterIP that portmap's unscoped rule caught before our ADD reaches the Service after it", async () => {
      const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
      await h.topo.serveService({ udp: [5354] });
      const heard: string[] = [];
      let stream: ChildProcess | undefined;
      try {
        await firstAdd(h, "e", list, [containerdMapping(5354, 53, "udp")], async (_chain, pod) => {
          await h.topo.servePod(pod, { udp: [53] });
          // A flow that keeps sending: its conntrack entry, made by portmap's rule, would keep the pod's DNAT.
          stream = await spawnInNs(
            h.topo.client,
            process.execPath,
            [UDP_STREAM, CLUSTER_IP, "5354", "100", "40057"],
            "ready",
          );
          stream.stdout!.on("data", (d: Buffer) => heard.push(...d.toString().split("\n")));
          await eventually("the flow reaches the pod through portmap's unscoped rule", async () =>
            heard.includes("pod-e"),
          );
        });
        const from = heard.length;
        await eventually("the flow reaches the Service", async () => heard.slice(from).includes("service"));
      } finally {
        if (stream) await stopChild(stream);
      }
    });

    it("a rule someone put first in the pod's chain stays first, portmap's are swapped after it", async () => {
      const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
      let foreign = "";
      const { pod, calls } = await firstAdd(h, "c", list, mappings, async (chain) => {
        foreign = `-A ${chain} -s 198.51.100.7/32 -j RETURN`;
        await nsRunOk(
          h.topo.node,
          "iptables",
          ["-w", "5", "-t", "nat", "-I", chain, "1", ...foreign.split(" ").slice(2)],
          {
            env: { ...process.env, PATH: h.iptables.path ?? (process.env["PATH"] as string) },
          },
        );
      });
      expect(reads(calls)).toEqual([]);
      const rules = podRulesIn(await snapshot(h.topo, h.iptables), list.name, pod.containerID, 4);
      expect(rules[0]).toBe(foreign);
      expect(rules.slice(1).every((r) => / -d \S+ /.test(r))).toBe(true);
    });
  },
);

describe.skipIf(!IS_ROOT || nftablesBackend).each(IPTABLES_VARIANTS)(
  "a container's first ADD on a node with many local addresses (1,100 Service IPs on kube-ipvs0), $variant",
  ({ legacy }) => {
    const h = useHarness({ legacyIptables: legacy });

    it("reads the chain first: a restore line's port costs a dump of every address, and the swap doubles those lines", async () => {
      await manyServiceIps(h.topo, 1_100);
      const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
      const { pod, calls } = await firstAdd(h, "a", list, mappings);
      // The read, then one restore: the rewrite.
      expect(reads(calls)).toHaveLength(1);
      expect(restores(calls, 4)).toHaveLength(1);
      const rules = podRulesIn(await snapshot(h.topo, h.iptables), list.name, pod.containerID, 4);
      expect(rules.filter((r) => r.includes("-j DNAT")).every((r) => / -d \S+ /.test(r))).toBe(true);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8080)).toBe("pod-a");
    });
  },
);

describe.skipIf(!IS_ROOT || !nftablesBackend)("a container's first ADD, portmap's nftables backend", () => {
  const h = useHarness();

  it("tries the swap once per network: later first ADDs read portmap's nftables rules at once", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
    // The refused swap (no iptables chain of portmap's), then its nftables rules read and scoped.
    expect(restores((await firstAdd(h, "a", list, mappings)).calls, 4)).toHaveLength(1);
    const { calls } = await firstAdd(h, "b", list, [containerdMapping(8081, 80)]);
    expect([...restores(calls, 4), ...restores(calls, 6)]).toEqual([]);
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8081)).toBe("pod-b");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8081)).toBe("pod-b");
  });
});
