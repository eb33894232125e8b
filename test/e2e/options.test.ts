// Configuration variants and the runtime's environment: defaultHostIP "any" and explicit IPs, nodeIPs,
// nodeInterfaces, a leaked NODE_OPTIONS, and the iptables-legacy backend; with either of portmap's backends.
import { beforeAll, describe, expect, it } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  CLUSTER_IP,
  containerdMapping,
  describeRun,
  dnChainName,
  type Harness,
  IS_ROOT,
  ipv4RuleSpec,
  linesMentioning,
  NODE_IP1,
  NODE_IP2,
  natSave,
  type PluginConf,
  podHostportRules,
  portmapRulesFor,
  portmapVariant,
  whoAnswers,
} from "../support/harness.js";

/** Starts pod `name` with one hostPort under the given entry options; returns its chain's rules sorted, and the expectation helper. */
async function scopedPod(h: Harness, name: string, hostPort: number, hostip: Partial<PluginConf>, annotation?: string) {
  const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip });
  const { pod, add } = await h.startPod(name, list, {
    portMappings: [containerdMapping(hostPort, 80)],
    ...(annotation === undefined ? {} : { hostIPAnnotation: annotation }),
    serve: { tcp: [80] },
  });
  expect(add.ok, describeRun(add)).toBe(true);
  const rules = [...((await podHostportRules(h, list.name, pod.containerID)) ?? [])].sort();
  const spec = { ...ipv4RuleSpec(list.name, pod.containerID, add.result), hostPort, containerPort: 80 };
  const expected = (ips: Array<string | undefined>) => portmapRulesFor(spec, ips).sort();
  return { rules, expected, pod };
}

describeAsRoot("policy options", () => {
  const h = useHarness();
  beforeAll(async () => {
    await h.topo.serveService({ tcp: [8101] });
  });

  it('defaultHostIP "any" without annotation leaves portmap\'s rules alone', async () => {
    const { rules, expected } = await scopedPod(h, "any", 8101, { defaultHostIP: "any" });
    expect(rules).toEqual(expected([undefined]));
    expect(await whoAnswers(h.topo.client, "tcp", CLUSTER_IP, 8101)).toBe("pod-any");
  });

  it("explicit defaultHostIP list", async () => {
    const { rules, expected } = await scopedPod(h, "explicit", 8102, { defaultHostIP: [NODE_IP2] });
    expect(rules).toEqual(expected([NODE_IP2]));
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8102)).toBe("pod-explicit");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8102)).toBeNull();
  });

  it('"node" with nodeIPs uses exactly those plus 127.0.0.1', async () => {
    const { rules, expected } = await scopedPod(h, "nodeips", 8103, { defaultHostIP: "node", nodeIPs: [NODE_IP1] });
    expect(rules).toEqual(expected([NODE_IP1, "127.0.0.1"]));
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8103)).toBeNull();
  });

  it('"node" with nodeInterfaces uses that interface\'s global addresses', async () => {
    const { rules, expected } = await scopedPod(h, "ifaces", 8104, {
      defaultHostIP: "node",
      nodeInterfaces: ["uplink"],
    });
    expect(rules).toEqual(expected([NODE_IP1, NODE_IP2, "127.0.0.1"]));
  });
});

describeAsRoot("runtime environment: a leaked NODE_OPTIONS", () => {
  const h = useHarness({ extraEnv: { NODE_OPTIONS: "--require /nonexistent/preload.js --max-old-space-size=16" } });

  it("does not break the plugin", async () => {
    const { rules, expected } = await scopedPod(h, "env", 8105, { defaultHostIP: "node" }, NODE_IP1);
    expect(rules).toEqual(expected([NODE_IP1]));
  });
});

// portmap's nftables backend does not use iptables at all.
describe.skipIf(!IS_ROOT || portmapVariant().backend === "nftables")(
  "runtime environment: iptables-legacy first on PATH",
  () => {
    const h = useHarness({ legacyIptables: true });

    it("portmap and the plugin both use it", async () => {
      const { rules, expected, pod } = await scopedPod(h, "legacy", 8106, { defaultHostIP: "node" }, NODE_IP2);
      expect(rules).toEqual(expected([NODE_IP2]));
      // The nft side saw nothing of it.
      expect(linesMentioning(await natSave(h.topo.node, 4), dnChainName("cbr0", pod.containerID))).toEqual([]);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8106)).toBe("pod-legacy");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8106)).toBeNull();
    });
  },
);
