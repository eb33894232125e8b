// Dual-stack pods: each family gets only its own host IPs (iptables: IPv6 rules use /128).
import { expect, it } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  againstPortmapAlone,
  bridgeConflist,
  containerdMapping,
  describeRun,
  NEVER_MATCHING_IP,
  NODE_IP1,
  NODE_IP2,
  NODE_IP6,
  POD_SUBNET,
  POD_SUBNET6,
  podHostportRules,
  podIPs,
  portmapRulesFor,
  portmapVariant,
  whoAnswers,
} from "../support/harness.js";

describeAsRoot("IPv6 dual-stack pod", () => {
  const h = useHarness();
  const alone = useHarness();

  it("annotation with the node's IPv6 address: reachable over IPv6 only, chain as portmap writes it", async () => {
    const r = await againstPortmapAlone(h, alone, {
      list: (dataDir) => bridgeConflist({ dataDir, dualStack: true, hostip: { defaultHostIP: "node" } }),
      pod: {
        containerID: "e2e-ipv6-only",
        portMappings: [containerdMapping(8080, 80)],
        hostIPAnnotation: NODE_IP6,
        serve: { tcp: [80] },
      },
      referenceMappings: [containerdMapping(8080, 80, "tcp", NODE_IP6)],
    });
    expect(r.ours.ours.code, describeRun(r.ours.add)).toBe(0);
    const ips = podIPs(r.ours.add.result);
    const spec = { listName: "cbr0", containerID: "e2e-ipv6-only", hostPort: 8080, containerPort: 80 };
    expect(await podHostportRules(h, "cbr0", spec.containerID, 6)).toEqual(
      portmapRulesFor({ ...spec, family: 6, podSubnet: POD_SUBNET6, podIP: ips.v6! }, [NODE_IP6]),
    );
    if (portmapVariant().backend === "iptables") {
      // No IPv4 host IP: no IPv4 rules for the mapping, as portmap does for an IPv6 hostIP.
      expect(await podHostportRules(h, "cbr0", spec.containerID, 4)).toEqual([]);
      expect(r.nat.ours).toEqual(r.nat.alone);
    } else {
      // portmap's nftables CHECK counts the pod's rules per family: the IPv4 one stays, matching nothing.
      const never = portmapRulesFor({ ...spec, family: 4, podSubnet: POD_SUBNET, podIP: ips.v4! }, [
        NEVER_MATCHING_IP[4],
      ]);
      expect(await podHostportRules(h, "cbr0", spec.containerID, 4)).toEqual(never);
      const withoutNever = {
        ...r.nat.ours,
        nft: { v4: r.nat.ours.nft!.v4.filter((l) => l.trim() !== never[0]), v6: r.nat.ours.nft!.v6 },
      };
      expect(withoutNever).toEqual(r.nat.alone);
    }

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
    const ips = podIPs(add.result);
    const base = { listName: list.name, containerID: pod.containerID, hostPort: 8081, containerPort: 80 };
    expect(await podHostportRules(h, list.name, pod.containerID, 4)).toEqual(
      portmapRulesFor({ ...base, family: 4, podSubnet: POD_SUBNET, podIP: ips.v4! }, [NODE_IP2]),
    );
    expect(await podHostportRules(h, list.name, pod.containerID, 6)).toEqual(
      portmapRulesFor({ ...base, family: 6, podSubnet: POD_SUBNET6, podIP: ips.v6! }, [NODE_IP6]),
    );

    await h.topo.settleIPv6();
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8081)).toBe("pod-b");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8081)).toBe("pod-b");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8081)).toBeNull();
  });

  it('defaultHostIP "node" uses the node\'s global IPv6 address for the IPv6 family', async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
    const { pod, add } = await h.startPod("c", list, {
      portMappings: [containerdMapping(8082, 80)],
      serve: { tcp: [80] },
    });
    expect(add.ok, describeRun(add)).toBe(true);
    const ips = podIPs(add.result);
    expect(await podHostportRules(h, list.name, pod.containerID, 6)).toEqual(
      portmapRulesFor(
        {
          listName: list.name,
          containerID: pod.containerID,
          family: 6,
          podSubnet: POD_SUBNET6,
          podIP: ips.v6!,
          hostPort: 8082,
          containerPort: 80,
        },
        [NODE_IP6],
      ),
    );
    await h.topo.settleIPv6();
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8082)).toBe("pod-c");
    expect(await whoAnswers(pod.ns, "tcp", NODE_IP6, 8082)).toBe("pod-c");
  });
});
