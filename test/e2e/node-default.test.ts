// defaultHostIP "node": the hostPort answers on the node's addresses and localhost, and no longer hijacks a
// Service whose ClusterIP (on kube-ipvs0) uses the same port — which portmap alone does.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CLUSTER_IP,
  IS_ROOT,
  NODE_IP1,
  NODE_IP2,
  ROOT_SKIP_MESSAGE,
  bridgeConflist,
  chainRules,
  containerdMapping,
  createHarness,
  describeRun,
  destinations,
  dnChainName,
  whoAnswers,
  type Harness,
} from "../support/harness.js";

if (!IS_ROOT) console.warn(ROOT_SKIP_MESSAGE);

const HOST_PORT = 8080;
const mappings = [containerdMapping(HOST_PORT, 80)];

describe.skipIf(!IS_ROOT)("portmap alone (the bug)", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness();
  });
  afterAll(async () => {
    await h?.destroy();
  });

  it("DNATs every local address, the ClusterIP included", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: false });
    const { pod, add } = await h.startPod("a", list, { portMappings: mappings, serve: { tcp: [80] } });
    expect(add.ok, describeRun(add)).toBe(true);
    await h.topo.serveService({ tcp: [HOST_PORT] });

    const rules = await chainRules(h.topo.node, dnChainName(list.name, pod.containerID));
    expect(rules).not.toBeNull();
    expect(destinations(rules!)).toEqual(["", "", ""]);

    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, HOST_PORT)).toBe("pod-a");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, HOST_PORT)).toBe("pod-a");
    expect(await whoAnswers(h.topo.client, "tcp", CLUSTER_IP, HOST_PORT)).toBe("pod-a");
  });
});
