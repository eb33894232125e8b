// The same hostPort twice in one pod (Kubernetes keys a hostPort by protocol, hostIP and port): a specific hostIP
// and none, 0.0.0.0 and none, none and an IPv6 hostIP. Accepted, in portmap's order (first match wins), so that
// within the addresses the policy allows traffic goes where portmap alone sends it; a mapping that can never
// receive traffic is named in a warning. Real packets, on iptables-nft and iptables-legacy.
import { describe, expect, it } from "vitest";
import { describeAsRoot, IPTABLES_VARIANTS, useHarness } from "../support/e2e.js";
import {
  againstPortmapAlone,
  bridgeConflist,
  CLUSTER_IP,
  containerdMapping,
  describeRun,
  type Harness,
  NODE_IP1,
  NODE_IP2,
  NODE_IP6,
  type PortMapping,
  rulesIn,
  whoAnswers,
} from "../support/harness.js";

/** The pod answers "port-80" on container port 80 and "port-81" on 81: which mapping took the packet. */
async function start(h: Harness, name: string, portMappings: PortMapping[], o: { dualStack?: boolean } = {}) {
  const list = bridgeConflist({
    dataDir: h.topo.ipamDataDir,
    dualStack: o.dualStack ?? false,
    hostip: { defaultHostIP: "node" },
  });
  const started = await h.startPodObserved(name, list, { portMappings });
  expect(started.add.ok, describeRun(started.add)).toBe(true);
  for (const port of [80, 81]) await h.topo.serve(started.pod.ns, `port-${port}`, { tcp: [port] });
  if (o.dualStack) await h.topo.settleIPv6();
  return started;
}

const NEVER =
  /warning: pod default\/\S+ .*: hostPort (\d+)\/tcp → container port (\d+) \(hostIP "([^"]*)"\) can never receive traffic/;

describeAsRoot.each(IPTABLES_VARIANTS)("the same hostPort twice in one pod, $variant", ({ legacy }) => {
  describe("a specific hostIP, then none", () => {
    const h = useHarness({ legacyIptables: legacy });
    const alone = useHarness({ legacyIptables: legacy });

    it("the specific one takes its address, the other every other allowed one; the chain is portmap's own for those hostIPs", async () => {
      await h.topo.serveService({ tcp: [8300] });
      const r = await againstPortmapAlone(h, alone, {
        list: (dataDir) => bridgeConflist({ dataDir, hostip: { defaultHostIP: "node" } }),
        pod: {
          containerID: "e2e-same-port-1",
          portMappings: [containerdMapping(8300, 80, "tcp", NODE_IP1), containerdMapping(8300, 81)],
        },
        // portmap alone, given each host IP as a mapping of its own, in the same order.
        referenceMappings: [NODE_IP1, NODE_IP1, NODE_IP2, "127.0.0.1"].map((ip, i) =>
          containerdMapping(8300, i === 0 ? 80 : 81, "tcp", ip),
        ),
      });
      expect(r.ours.ours.code, describeRun(r.ours.add)).toBe(0);
      expect(rulesIn(r.nat.ours.v4, r.chain)).toEqual(rulesIn(r.nat.alone.v4, r.chain));
      expect(r.ours.ours.stderr).not.toMatch(NEVER);
      for (const port of [80, 81]) await h.topo.serve(r.ours.pod.ns, `port-${port}`, { tcp: [port] });
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8300)).toBe("port-80");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8300)).toBe("port-81");
      expect(await whoAnswers(h.topo.node, "tcp", "127.0.0.1", 8300)).toBe("port-81");
      expect(await whoAnswers(h.topo.client, "tcp", CLUSTER_IP, 8300)).toBe("service");
    });
  });

  describe("none, then a specific hostIP", () => {
    const h = useHarness({ legacyIptables: legacy });

    it("the first takes every allowed address, as with portmap alone; the second is named as never receiving traffic", async () => {
      const p = await start(h, "rev", [containerdMapping(8301, 81), containerdMapping(8301, 80, "tcp", NODE_IP1)]);
      expect(p.ours.stderr).toMatch(NEVER);
      expect(NEVER.exec(p.ours.stderr)?.slice(1)).toEqual(["8301", "80", NODE_IP1]);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8301)).toBe("port-81");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8301)).toBe("port-81");
    });
  });

  describe("0.0.0.0 next to none, and none next to an IPv6 hostIP (dual-stack pod)", () => {
    const h = useHarness({ legacyIptables: legacy });

    it("0.0.0.0 first takes IPv4; the one with none still gets IPv6", async () => {
      const p = await start(h, "wild", [containerdMapping(8302, 80, "tcp", "0.0.0.0"), containerdMapping(8302, 81)], {
        dualStack: true,
      });
      expect(p.ours.stderr).not.toMatch(NEVER);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8302)).toBe("port-80");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8302)).toBe("port-80");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8302)).toBe("port-81");
    });

    it("an IPv6 hostIP first takes its address; none takes IPv4", async () => {
      const p = await start(h, "v6first", [containerdMapping(8303, 81, "tcp", NODE_IP6), containerdMapping(8303, 80)], {
        dualStack: true,
      });
      expect(p.ours.stderr).not.toMatch(NEVER);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8303)).toBe("port-81");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8303)).toBe("port-80");
    });

    it("none first takes IPv6 too: the IPv6 hostIP after it is named as never receiving traffic", async () => {
      const p = await start(h, "v6after", [containerdMapping(8304, 80), containerdMapping(8304, 81, "tcp", NODE_IP6)], {
        dualStack: true,
      });
      expect(NEVER.exec(p.ours.stderr)?.slice(1)).toEqual(["8304", "81", NODE_IP6]);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8304)).toBe("port-80");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8304)).toBe("port-80");
    });
  });
});
