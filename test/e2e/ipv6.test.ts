// Dual-stack pods: each family gets only its own host IPs; IPv6 rules use /128.
import { expect, it } from "vitest";
import {
  againstPortmapAlone,
  rulesIn,
  NODE_IP1,
  NODE_IP2,
  NODE_IP6,
  POD_SUBNET,
  POD_SUBNET6,
  bridgeConflist,
  chainRules,
  containerdMapping,
  describeRun,
  dnChainName,
  podIPs,
  scopedRules,
  whoAnswers,
} from "../support/harness.js";
import { describeAsRoot, useHarness } from "../support/e2e.js";

describeAsRoot("IPv6 dual-stack pod", () => {
  const h = useHarness();
  const alone = useHarness();

  it("annotation with the node's IPv6 address: reachable over IPv6 only, chain as portmap writes it", async () => {
    const r = await againstPortmapAlone(h, alone, {
      list: (dataDir) => bridgeConflist({ dataDir, dualStack: true, hostip: { defaultHostIP: "node" } }),
      pod: { containerID: "e2e-ipv6-only", portMappings: [containerdMapping(8080, 80)], hostIPAnnotation: NODE_IP6, serve: { tcp: [80] } },
      referenceMappings: [containerdMapping(8080, 80, "tcp", NODE_IP6)],
    });
    expect(r.ours.ours.code, describeRun(r.ours.add)).toBe(0);
    const v6 = rulesIn(r.nat.ours.v6, r.chain);
    expect(v6).toHaveLength(2);
    for (const rule of v6) expect(rule).toContain(` -d ${NODE_IP6}/128 `);
    // No IPv4 host IP: no IPv4 rules for the mapping, as portmap does for an IPv6 hostIP.
    expect(rulesIn(r.nat.ours.v4, r.chain)).toEqual([]);
    expect(r.nat.ours).toEqual(r.nat.alone);

    await h.topo.settleIPv6();
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8080)).toBe("pod-a");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8080)).toBeNull();
  });

  it("one IPv4 and one IPv6 annotation entry scope each family to its own address", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
    const { pod, add } = await h.startPod("b", list, {
      portMappings: [containerdMapping(8081, 80)],
      hostIPAnnotation: `${NODE_IP2}, ${NODE_IP6}`,
      serve: { tcp: [80] },
    });
    expect(add.ok, describeRun(add)).toBe(true);
    const chain = dnChainName(list.name, pod.containerID);
    const ips = podIPs(add.result);
    const base = { chain, hostPort: 8081, containerPort: 80 };
    expect(await chainRules(h.topo.node, chain, 4)).toEqual(scopedRules({ ...base, family: 4, podSubnet: POD_SUBNET, podIP: ips.v4! }, [NODE_IP2]));
    expect(await chainRules(h.topo.node, chain, 6)).toEqual(scopedRules({ ...base, family: 6, podSubnet: POD_SUBNET6, podIP: ips.v6! }, [NODE_IP6]));

    await h.topo.settleIPv6();
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8081)).toBe("pod-b");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8081)).toBe("pod-b");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8081)).toBeNull();
  });

  it('defaultHostIP "node" uses the node\'s global IPv6 address for the IPv6 family', async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
    const { pod, add } = await h.startPod("c", list, { portMappings: [containerdMapping(8082, 80)], serve: { tcp: [80] } });
    expect(add.ok, describeRun(add)).toBe(true);
    const chain = dnChainName(list.name, pod.containerID);
    const ips = podIPs(add.result);
    expect(await chainRules(h.topo.node, chain, 6)).toEqual(
      scopedRules({ chain, family: 6, podSubnet: POD_SUBNET6, podIP: ips.v6!, hostPort: 8082, containerPort: 80 }, [NODE_IP6]),
    );
    await h.topo.settleIPv6();
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8082)).toBe("pod-c");
    expect(await whoAnswers(pod.ns, "tcp", NODE_IP6, 8082)).toBe("pod-c");
  });
});
