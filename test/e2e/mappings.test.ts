// Several mappings, tcp and udp, with containerd's capitalised keys and with the spec's lowercase keys.
import { expect, it } from "vitest";
import {
  NODE_IP1,
  NODE_IP2,
  POD_SUBNET,
  bridgeConflist,
  chainRules,
  containerdMapping,
  describeRun,
  dnChainName,
  outside,
  podIPs,
  rulesIn,
  portmapRules,
  scopedRules,
  specMapping,
  whoAnswers,
} from "../support/harness.js";
import { describeAsRoot, useHarness } from "../support/e2e.js";

describeAsRoot("several mappings", () => {
  const h = useHarness();

  it("containerd keys: tcp and udp mappings all scoped to the annotated IP, a runtime hostIP kept", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
    const { pod, add } = await h.startPod("a", list, {
      portMappings: [
        containerdMapping(8080, 80, "tcp"),
        containerdMapping(5353, 53, "udp"),
        containerdMapping(8443, 443, "tcp", NODE_IP1), // specific runtime hostIP: kept as portmap wrote it
      ],
      hostIPAnnotation: NODE_IP2,
      serve: { tcp: [80, 443], udp: [53] },
    });
    expect(add.ok, describeRun(add)).toBe(true);
    const chain = dnChainName(list.name, pod.containerID);
    const base = { chain, family: 4 as const, podSubnet: POD_SUBNET, podIP: podIPs(add.result).v4! };
    expect(await chainRules(h.topo.node, chain)).toEqual([
      ...scopedRules({ ...base, hostPort: 8080, containerPort: 80 }, [NODE_IP2]),
      ...scopedRules({ ...base, hostPort: 5353, containerPort: 53, protocol: "udp" }, [NODE_IP2]),
      ...portmapRules({ ...base, hostPort: 8443, containerPort: 443, hostIP: NODE_IP1 }),
    ]);

    const c = h.topo.client;
    expect(await whoAnswers(c, "tcp", NODE_IP2, 8080)).toBe("pod-a");
    expect(await whoAnswers(c, "udp", NODE_IP2, 5353)).toBe("pod-a");
    expect(await whoAnswers(c, "tcp", NODE_IP1, 8080)).toBeNull();
    expect(await whoAnswers(c, "udp", NODE_IP1, 5353)).toBeNull();
    expect(await whoAnswers(c, "tcp", NODE_IP1, 8443)).toBe("pod-a");
    expect(await whoAnswers(c, "tcp", NODE_IP2, 8443)).toBeNull();
  });

  it("spec keys: a port-specific annotation entry beats the plain one; several IPs each get the full rule set", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "any" } });
    const { pod, add } = await h.startPod("b", list, {
      portMappings: [specMapping(9080, 80, "tcp"), specMapping(9053, 53, "udp", ""), specMapping(9090, 90, "tcp")],
      hostIPAnnotation: ` ${NODE_IP2} , 9080/tcp = ${NODE_IP1}, 9053/udp=${NODE_IP1}, 9053/udp=${NODE_IP2}`,
      serve: { tcp: [80, 90], udp: [53] },
    });
    expect(add.ok, describeRun(add)).toBe(true);
    const chain = dnChainName(list.name, pod.containerID);
    const base = { chain, family: 4 as const, podSubnet: POD_SUBNET, podIP: podIPs(add.result).v4! };
    const rules = await chainRules(h.topo.node, chain);
    // Rule order inside one mapping's IP list is the plugin's business: compare per mapping as sets.
    const byPort = (port: number) => rules!.filter((r) => r.includes(`--dport ${port} `)).sort();
    expect(byPort(9080)).toEqual(scopedRules({ ...base, hostPort: 9080, containerPort: 80 }, [NODE_IP1]).sort());
    expect(byPort(9053)).toEqual(scopedRules({ ...base, hostPort: 9053, containerPort: 53, protocol: "udp" }, [NODE_IP1, NODE_IP2]).sort());
    expect(byPort(9090)).toEqual(scopedRules({ ...base, hostPort: 9090, containerPort: 90 }, [NODE_IP2]).sort());
    expect(rules).toHaveLength(12);

    const c = h.topo.client;
    expect(await whoAnswers(c, "tcp", NODE_IP1, 9080)).toBe("pod-b");
    expect(await whoAnswers(c, "tcp", NODE_IP2, 9080)).toBeNull();
    expect(await whoAnswers(c, "udp", NODE_IP1, 9053)).toBe("pod-b");
    expect(await whoAnswers(c, "udp", NODE_IP2, 9053)).toBe("pod-b");
    expect(await whoAnswers(c, "tcp", NODE_IP2, 9090)).toBe("pod-b");
    expect(await whoAnswers(c, "tcp", NODE_IP1, 9090)).toBeNull();
  });

  it('a runtime hostIP of "0.0.0.0" is not specific: the annotation applies', async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "any" } });
    const { pod, add } = await h.startPod("c", list, {
      portMappings: [containerdMapping(9180, 80, "tcp", "0.0.0.0")],
      hostIPAnnotation: NODE_IP1,
      serve: { tcp: [80] },
    });
    expect(add.ok, describeRun(add)).toBe(true);
    const chain = dnChainName(list.name, pod.containerID);
    const base = { chain, family: 4 as const, podSubnet: POD_SUBNET, podIP: podIPs(add.result).v4! };
    expect(await chainRules(h.topo.node, chain)).toEqual(scopedRules({ ...base, hostPort: 9180, containerPort: 80 }, [NODE_IP1]));
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 9180)).toBe("pod-c");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 9180)).toBeNull();
  });

  it("more than 15 ports (portmap splits its multiport jumps): every mapping scoped, nothing else touched", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "any" } });
    const ports = Array.from({ length: 20 }, (_, i) => 9200 + i);
    const started = await h.startPodObserved("many", list, { portMappings: ports.map((p) => containerdMapping(p, 80)), hostIPAnnotation: NODE_IP2 });
    expect(started.ours.code, describeRun(started.add)).toBe(0);
    const chain = dnChainName(list.name, started.pod.containerID);
    const base = { chain, family: 4 as const, podSubnet: POD_SUBNET, podIP: podIPs(started.add.result).v4! };
    expect(rulesIn(started.after.v4, chain)).toEqual(ports.flatMap((p) => scopedRules({ ...base, hostPort: p, containerPort: 80 }, [NODE_IP2])));
    expect(started.after.v4.filter((l) => l.startsWith("-A CNI-HOSTPORT-DNAT ") && l.endsWith(chain))).toHaveLength(2);
    expect(outside(started.after, list.name, started.pod.containerID)).toEqual(outside(started.before, list.name, started.pod.containerID));
  });
});
