// Host IPs the pod may not have: ADD fails with a CNI error and leaves the nat table as portmap left it.
import { expect, it } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  CLUSTER_IP,
  containerdMapping,
  describeRun,
  FOREIGN_IP,
  NODE_IP2,
  type PluginConf,
} from "../support/harness.js";

const cases: { what: string; annotation: string; hostip: Partial<PluginConf> }[] = [
  { what: "the ClusterIP on kube-ipvs0 (excluded interface)", annotation: CLUSTER_IP, hostip: {} },
  { what: "an address the node does not have", annotation: FOREIGN_IP, hostip: {} },
  {
    what: "a node address outside allowedHostCIDRs",
    annotation: NODE_IP2,
    hostip: { allowedHostCIDRs: ["192.0.2.10/32"] },
  },
  { what: "an address of a family the pod lacks (IPv6 for an IPv4-only pod)", annotation: "fe80::1", hostip: {} },
  { what: "an annotation that is not an IP", annotation: "not-an-ip", hostip: {} },
  { what: "an annotation with an unknown protocol", annotation: `8080/xyz=${NODE_IP2}`, hostip: {} },
];

describeAsRoot("rejected host IPs", () => {
  const h = useHarness();

  it.each(cases.map((c, i) => ({ ...c, i })))("$what", async ({ annotation, hostip, i }) => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node", ...hostip } });
    const started = await h.startPodObserved(`r${i}`, list, {
      portMappings: [containerdMapping(8080 + i, 80)],
      hostIPAnnotation: annotation,
    });
    const { ours } = started;
    expect(ours.code, describeRun(started.add)).not.toBe(0);
    expect(ours.output, `stdout: ${ours.stdout}`).toMatchObject({
      cniVersion: list.cniVersion,
      msg: expect.any(String),
    });
    expect(ours.output!["code"]).toBeGreaterThanOrEqual(100);
    expect(`${ours.output!["msg"]} ${ours.output!["details"] ?? ""}`).toContain(annotation);
    expect(started.after).toEqual(started.before);

    // The runtime cleans up a failed ADD with DEL; that must work.
    const del = await h.cni.del(list, started.rt);
    expect(del.ok, describeRun(del)).toBe(true);
  });
});
