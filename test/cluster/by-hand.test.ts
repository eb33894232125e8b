// The plugin on a real Kubernetes node, installed by hand (no image): `portmap-hostip install` on the node, as
// the README's quick start does, then hostPort pods applied with kubectl. It runs whatever becomes of the
// image build (test/cluster/daemonset.test.ts runs the image).
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Cluster, startCluster } from "../support/cluster/cluster.js";
import { describeCluster } from "../support/cluster/requirements.js";
import {
  answers,
  applyPods,
  expectedAnswers,
  POLICY_PODS,
  podTraces,
  REFUSED_POD,
  refusalEvents,
  waitReady,
} from "../support/cluster/workloads.js";
import { pluginFile } from "../support/paths.js";

const pods = Object.values(POLICY_PODS);

describeCluster("a Kubernetes v1.32.6 node with the plugin installed by hand", () => {
  let c: Cluster;

  beforeAll(async () => {
    c = await startCluster();
    await c.topo.serveService({ tcp: [...pods, REFUSED_POD].map((p) => p.hostPort) });
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
    await applyPods(c, [...pods, REFUSED_POD]);
    await waitReady(c, pods);
    for (const pod of pods) expect(await answers(c, pod), pod.name).toEqual(expectedAnswers(pod));
  });

  it("a refused pod's kubectl describe shows the plugin's message in its events", async () => {
    const events = await refusalEvents(c, REFUSED_POD);
    expect(events).toMatch(/portmap-hostip/);
  });

  it("pods deleted leave no chain, jump, cache entry or address lease", async () => {
    await c.kubectlOk(["delete", "pod", "-l", "pmh-test=hostport", "--wait", "--timeout=60s"], { timeoutMs: 70_000 });
    expect(await podTraces(c)).toEqual({ nat: [], cache: [], leases: [] });
  });
});
