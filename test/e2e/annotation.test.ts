// The pod annotation names one node IP: only that IP answers, and the chain is exactly what portmap itself
// writes when the runtime passes that hostIP (same network name and container ID in a second node namespace).
import { expect, it } from "vitest";
import {
  NODE_IP1,
  NODE_IP2,
  bridgeConflist,
  chainRules,
  containerdMapping,
  describeRun,
  dnChainName,
  natSave,
  whoAnswers,
  withoutPlugin,
} from "../support/harness.js";
import { describeAsRoot, useHarness } from "../support/e2e.js";

describeAsRoot.each(["0.3.1", "1.0.0"])("annotation host-ip, cniVersion %s", (cniVersion) => {
  const containerID = `e2e-annotation-${cniVersion.replaceAll(".", "")}`;
  const ours = useHarness();
  const alone = useHarness();

  it("scopes the hostPort to the annotated IP exactly as portmap does for a runtime hostIP", async () => {
    const list = bridgeConflist({ dataDir: ours.topo.ipamDataDir, cniVersion, hostip: { defaultHostIP: "any" } });
    const started = await ours.startPodObserved("a", list, {
      containerID,
      portMappings: [containerdMapping(8080, 80)],
      hostIPAnnotation: NODE_IP2,
      serve: { tcp: [80] },
    });
    expect(started.ours.code, describeRun(started.add)).toBe(0);
    // ADD prints the result it got.
    expect(started.ours.output).toEqual(started.base.result);

    const reference = await alone.startPod("a", withoutPlugin(bridgeConflist({ dataDir: alone.topo.ipamDataDir, cniVersion })), {
      containerID,
      portMappings: [containerdMapping(8080, 80, "tcp", NODE_IP2)],
    });
    expect(reference.add.ok, describeRun(reference.add)).toBe(true);

    const chain = dnChainName(list.name, containerID);
    const got = await chainRules(ours.topo.node, chain);
    expect(got).toHaveLength(3);
    expect(got).toEqual(await chainRules(alone.topo.node, chain));
    // Same name and ID: the whole nat table is the one portmap writes for hostIP 192.0.2.11.
    expect(await natSave(ours.topo.node, 4)).toEqual(await natSave(alone.topo.node, 4));

    expect(await whoAnswers(ours.topo.client, "tcp", NODE_IP2, 8080)).toBe("pod-a");
    expect(await whoAnswers(ours.topo.client, "tcp", NODE_IP1, 8080)).toBeNull();
  });
});
