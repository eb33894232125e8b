// Several mappings, tcp and udp, with containerd's capitalised keys and with the spec's lowercase keys, with
// either of portmap's backends.
import { expect, it } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  containerdMapping,
  describeRun,
  dnChainName,
  ipv4RuleSpec,
  NODE_IP1,
  NODE_IP2,
  outside,
  podHostportRules,
  podRulesIn,
  portmapRulesFor,
  portmapVariant,
  specMapping,
  whoAnswers,
} from "../support/harness.js";

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
    const base = ipv4RuleSpec(list.name, pod.containerID, add.result);
    expect(await podHostportRules(h, list.name, pod.containerID)).toEqual([
      ...portmapRulesFor({ ...base, hostPort: 8080, containerPort: 80 }, [NODE_IP2]),
      ...portmapRulesFor({ ...base, hostPort: 5353, containerPort: 53, protocol: "udp" }, [NODE_IP2]),
      ...portmapRulesFor({ ...base, hostPort: 8443, containerPort: 443 }, [NODE_IP1]),
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
    const base = ipv4RuleSpec(list.name, pod.containerID, add.result);
    const rules = await podHostportRules(h, list.name, pod.containerID);
    // Rule order inside one mapping's IP list is the plugin's business: compare per mapping as sets.
    const byPort = (port: number) => rules!.filter((r) => r.includes(`dport ${port} `)).sort();
    const expected = {
      9080: portmapRulesFor({ ...base, hostPort: 9080, containerPort: 80 }, [NODE_IP1]),
      9053: portmapRulesFor({ ...base, hostPort: 9053, containerPort: 53, protocol: "udp" }, [NODE_IP1, NODE_IP2]),
      9090: portmapRulesFor({ ...base, hostPort: 9090, containerPort: 90 }, [NODE_IP2]),
    };
    for (const [port, want] of Object.entries(expected)) expect(byPort(Number(port))).toEqual(want.sort());
    expect(rules).toHaveLength(Object.values(expected).flat().length);

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
    const base = ipv4RuleSpec(list.name, pod.containerID, add.result);
    expect(await podHostportRules(h, list.name, pod.containerID)).toEqual(
      portmapRulesFor({ ...base, hostPort: 9180, containerPort: 80 }, [NODE_IP1]),
    );
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 9180)).toBe("pod-c");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 9180)).toBeNull();
  });

  it("more than 15 ports (iptables: portmap splits its multiport jumps): every mapping scoped, nothing else touched", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "any" } });
    const ports = Array.from({ length: 20 }, (_, i) => 9200 + i);
    const started = await h.startPodObserved("many", list, {
      portMappings: ports.map((p) => containerdMapping(p, 80)),
      hostIPAnnotation: NODE_IP2,
    });
    expect(started.ours.code, describeRun(started.add)).toBe(0);
    const id = started.pod.containerID;
    const base = ipv4RuleSpec(list.name, id, started.add.result);
    expect(podRulesIn(started.after, list.name, id, 4)).toEqual(
      ports.flatMap((p) => portmapRulesFor({ ...base, hostPort: p, containerPort: 80 }, [NODE_IP2])),
    );
    // iptables: portmap's jumps list at most 15 ports each (nftables has no per-pod jumps).
    if (portmapVariant().backend === "iptables") {
      const chain = dnChainName(list.name, id);
      expect(started.after.v4.filter((l) => l.startsWith("-A CNI-HOSTPORT-DNAT ") && l.endsWith(chain))).toHaveLength(
        2,
      );
    }
    expect(outside(started.after, list.name, started.pod.containerID)).toEqual(
      outside(started.before, list.name, started.pod.containerID),
    );
  });
});
