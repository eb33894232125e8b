// defaultHostIP "node": the hostPort answers on the node's addresses and localhost, and no longer hijacks a
// Service whose ClusterIP (on kube-ipvs0) uses the same port — which portmap alone does.
import { beforeAll, expect, it } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  CLUSTER_IP,
  containerdMapping,
  describeRun,
  ipv4RuleSpec,
  NODE_IP1,
  NODE_IP2,
  POD_SUBNET,
  podHostportRules,
  podIPs,
  portmapRulesFor,
  whoAnswers,
} from "../support/harness.js";

const HOST_PORT = 8080;
const mappings = [containerdMapping(HOST_PORT, 80)];

describeAsRoot("portmap alone (the bug)", () => {
  const h = useHarness();

  it("DNATs every local address, the ClusterIP included", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: false });
    const { pod, add } = await h.startPod("a", list, { portMappings: mappings, serve: { tcp: [80] } });
    expect(add.ok, describeRun(add)).toBe(true);
    await h.topo.serveService({ tcp: [HOST_PORT] });

    const spec = { ...ipv4RuleSpec(list.name, pod.containerID, add.result), hostPort: HOST_PORT, containerPort: 80 };
    expect(await podHostportRules(h, list.name, pod.containerID)).toEqual(portmapRulesFor(spec, [undefined]));

    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, HOST_PORT)).toBe("pod-a");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, HOST_PORT)).toBe("pod-a");
    expect(await whoAnswers(h.topo.client, "tcp", CLUSTER_IP, HOST_PORT)).toBe("pod-a");
  });
});

describeAsRoot("portmap-hostip, defaultHostIP node", () => {
  const h = useHarness();
  let listName: string;
  let containerID: string;
  let podIP: string;
  let podNs: string;
  beforeAll(async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
    const { pod, add } = await h.startPod("a", list, { portMappings: mappings, serve: { tcp: [80] } });
    if (!add.ok) throw new Error(describeRun(add));
    listName = list.name;
    containerID = pod.containerID;
    podIP = podIPs(add.result).v4!;
    podNs = pod.ns;
    await h.topo.serveService({ tcp: [HOST_PORT] });
  });

  it("writes portmap's rules for a hostIP once per node address and 127.0.0.1", async () => {
    const rules = await podHostportRules(h, listName, containerID);
    const spec = {
      listName,
      containerID,
      family: 4 as const,
      podSubnet: POD_SUBNET,
      podIP,
      hostPort: HOST_PORT,
      containerPort: 80,
    };
    expect([...rules!].sort()).toEqual(portmapRulesFor(spec, [NODE_IP1, NODE_IP2, "127.0.0.1"]).sort());
  });

  it("answers on both node IPs from the client", async () => {
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, HOST_PORT)).toBe("pod-a");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, HOST_PORT)).toBe("pod-a");
  });

  it("answers on localhost inside the node", async () => {
    expect(await whoAnswers(h.topo.node, "tcp", "127.0.0.1", HOST_PORT)).toBe("pod-a");
  });

  it("leaves the ClusterIP on kube-ipvs0 to the Service", async () => {
    expect(await whoAnswers(h.topo.client, "tcp", CLUSTER_IP, HOST_PORT)).toBe("service");
    expect(await whoAnswers(h.topo.node, "tcp", CLUSTER_IP, HOST_PORT)).toBe("service");
  });

  it("hairpins from the pod to a node IP:hostPort back to the pod", async () => {
    expect(await whoAnswers(podNs, "tcp", NODE_IP1, HOST_PORT)).toBe("pod-a");
  });
});
