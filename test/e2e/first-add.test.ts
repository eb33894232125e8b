// A container's first ADD swaps portmap's rules for the scoped ones without reading them: one iptables-restore
// per family deletes each rule portmap writes with its default options and appends the scoped ones. The chain is
// the one the read-and-rewrite gives (a later ADD, which reads, changes nothing). When portmap's rules are not
// those (its options differ), the swap changes nothing and the ADD reads the chain and rewrites it.
// The programs the plugin runs are seen with strace (the plugin's binary behind a wrapper that execs it).
import { afterAll, describe, expect, it } from "vitest";
import { IPTABLES_VARIANTS, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  containerdMapping,
  describeRun,
  dnChainName,
  IS_ROOT,
  NODE_IP1,
  NODE_IP6,
  PLUGIN_TYPE,
  podRulesIn,
  podRuntime,
  portmapVariant,
  snapshot,
  whoAnswers,
} from "../support/harness.js";
import { makeTempDir, nsRunOk, removeTempDir } from "../support/netns.js";
import { tracedPlugin } from "../support/trace.js";

const mappings = [containerdMapping(8080, 80), containerdMapping(5353, 53, "udp")];
const dir = makeTempDir("pmh-first-add");
afterAll(() => removeTempDir(dir));

const reads = (programs: readonly string[]) => programs.filter((p) => /^ip6?tables -w 5 -t nat -S /.test(p));
const restores = (programs: readonly string[], family: 4 | 6) =>
  programs.filter((p) => p.startsWith(family === 4 ? "iptables-restore " : "ip6tables-restore "));

// The swap is of portmap's iptables rules: with its nftables backend only the last test runs.
const nftablesBackend = portmapVariant().backend === "nftables";

describe.skipIf(!IS_ROOT || nftablesBackend).each(IPTABLES_VARIANTS)(
  "a container's first ADD, $variant",
  ({ variant, legacy }) => {
    const traced = tracedPlugin(dir, variant);
    const h = useHarness({ legacyIptables: legacy, pluginBinary: traced.bin });

    it("reads none of portmap's rules: one iptables-restore per family, the chains a read-and-rewrite gives", async () => {
      const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
      const { pod, add, rt } = await h.startPod("a", list, { portMappings: mappings, serve: { tcp: [80] } });
      expect(add.ok, describeRun(add)).toBe(true);
      const first = traced.programs();
      expect(reads(first)).toEqual([]);
      expect([restores(first, 4).length, restores(first, 6).length]).toEqual([1, 1]);
      const once = await snapshot(h.topo, h.iptables);
      for (const family of [4, 6] as const) {
        const rules = podRulesIn(once, list.name, pod.containerID, family);
        expect(rules.length).toBeGreaterThan(0);
        expect(rules.every((r) => / -d \S+ /.test(r))).toBe(true);
      }
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8080)).toBe("pod-a");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8080)).toBe("pod-a");

      // Our ADD again (the container has a record now): it reads both chains and finds nothing to change.
      const at = list.plugins.findIndex((p) => p.type === PLUGIN_TYPE);
      const again = await h.cni.add(list, rt, { from: at, prevResult: add.runs[at - 1]!.output! });
      expect(again.ok, describeRun(again)).toBe(true);
      const second = traced.programs();
      expect(reads(second)).toHaveLength(2);
      expect([...restores(second, 4), ...restores(second, 6)]).toEqual([]);
      expect(await snapshot(h.topo, h.iptables)).toEqual(once);
    });

    it("portmap without snat: the swap changes nothing, the ADD reads the chain and scopes it", async () => {
      const list = bridgeConflist({
        dataDir: h.topo.ipamDataDir,
        portmap: { snat: false },
        hostip: { defaultHostIP: "node" },
      });
      const portMappings = [containerdMapping(8081, 80)];
      const { pod, add } = await h.startPod("b", list, { portMappings, serve: { tcp: [80] } });
      expect(add.ok, describeRun(add)).toBe(true);
      const programs = traced.programs();
      expect(reads(programs)).toHaveLength(1);
      // The refused swap, then the write.
      expect(restores(programs, 4)).toHaveLength(2);
      const rules = podRulesIn(await snapshot(h.topo, h.iptables), list.name, pod.containerID, 4);
      expect(rules.some((r) => r.includes("SETMARK"))).toBe(false);
      expect(rules.filter((r) => r.includes("-j DNAT")).every((r) => / -d \S+ /.test(r))).toBe(true);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8081)).toBe("pod-b");
    });

    it("a rule someone put first in the pod's chain stays first, portmap's are swapped after it", async () => {
      const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
      const at = list.plugins.findIndex((p) => p.type === PLUGIN_TYPE);
      const pod = await h.topo.addPod("c");
      const rt = podRuntime(pod, { portMappings: mappings });
      const base = await h.cni.add(list, rt, { to: at });
      expect(base.ok, describeRun(base)).toBe(true);
      const chain = dnChainName(list.name, pod.containerID);
      const foreign = `-A ${chain} -s 198.51.100.7/32 -j RETURN`;
      await nsRunOk(
        h.topo.node,
        "iptables",
        ["-w", "5", "-t", "nat", "-I", chain, "1", ...foreign.split(" ").slice(2)],
        {
          env: { ...process.env, PATH: h.iptables.path ?? (process.env["PATH"] as string) },
        },
      );
      const add = await h.cni.add(list, rt, { from: at, prevResult: base.result! });
      expect(add.ok, describeRun(add)).toBe(true);
      expect(reads(traced.programs())).toEqual([]);
      const rules = podRulesIn(await snapshot(h.topo, h.iptables), list.name, pod.containerID, 4);
      expect(rules[0]).toBe(foreign);
      expect(rules.slice(1).every((r) => / -d \S+ /.test(r))).toBe(true);
    });
  },
);

describe.skipIf(!IS_ROOT || !nftablesBackend)("a container's first ADD, portmap's nftables backend", () => {
  const traced = tracedPlugin(dir, "nftables");
  const h = useHarness({ pluginBinary: traced.bin });

  it("tries the swap once per network: later first ADDs read portmap's nftables rules at once", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
    const a = await h.startPod("a", list, { portMappings: mappings });
    expect(a.add.ok, describeRun(a.add)).toBe(true);
    // The refused swap (no iptables chain of portmap's), then its nftables rules read and scoped.
    expect(restores(traced.programs(), 4)).toHaveLength(1);
    const b = await h.startPod("b", list, { portMappings: [containerdMapping(8081, 80)], serve: { tcp: [80] } });
    expect(b.add.ok, describeRun(b.add)).toBe(true);
    const second = traced.programs();
    expect([...restores(second, 4), ...restores(second, 6)]).toEqual([]);
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8081)).toBe("pod-b");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8081)).toBe("pod-b");
  });
});
