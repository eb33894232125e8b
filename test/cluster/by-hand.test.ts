// The plugin on a real Kubernetes node, installed by hand (no image): `portmap-hostip install` on the node, as
// the README's quick start does, then hostPort pods applied with kubectl. It runs whatever becomes of the
// image build (test/cluster/daemonset.test.ts runs the image).
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Cluster, startCluster } from "../support/cluster/cluster.js";
import { describeCluster } from "../support/cluster/requirements.js";
import {
  deleteTestPods,
  POLICY_PODS,
  policyAnswers,
  REFUSED_POD,
  refusalEvents,
  startPolicyPods,
} from "../support/cluster/workloads.js";
import { runOk } from "../support/exec.js";
import { pluginFile } from "../support/paths.js";

describeCluster("a Kubernetes v1.32.6 node with the plugin installed by hand", () => {
  let c: Cluster;

  beforeAll(async () => {
    c = await startCluster();
    await c.topo.serveService({ tcp: [...Object.values(POLICY_PODS), REFUSED_POD].map((p) => p.hostPort) });
  });

  afterAll(async () => {
    await c?.stop();
  });

  it("portmap-hostip install puts itself after portmap in flannel's conflist", async () => {
    const r = await c.nodeExec(pluginFile(), ["install"]);
    expect(r.code, r.stderr).toBe(0);
    const conflist = JSON.parse(readFileSync(c.nodePath("/etc/cni/net.d/10-flannel.conflist"), "utf8"));
    expect(conflist.plugins.map((p: { type: string }) => p.type)).toEqual(["flannel", "portmap", "portmap-hostip"]);
  });

  it("hostPort pods applied with kubectl answer exactly where the policy says; the ClusterIP answers its Service", async () => {
    await startPolicyPods(c);
    const { actual, expected } = await policyAnswers(c);
    expect(actual).toEqual(expected);
    // The pod's own network namespace, reached from here: it holds the address Kubernetes reports.
    const podIP = await c.kubectlOk(["get", "pod", POLICY_PODS.neither.name, "-o", "jsonpath={.status.podIP}"]);
    const netns = await c.podNetns("default", POLICY_PODS.neither.name);
    const addrs = await runOk("nsenter", [`--net=${netns}`, "ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    expect(addrs).toContain(` ${podIP}/24 `);
  });

  it("a refused pod's kubectl describe shows the plugin's message in its events", async () => {
    const events = await refusalEvents(c, REFUSED_POD);
    expect(events).toMatch(/portmap-hostip/);
  });

  it("pods deleted leave no chain, jump, cache entry or address lease", async () => {
    expect(await deleteTestPods(c)).toEqual({ nat: [], cache: [], leases: [] });
  });
});
