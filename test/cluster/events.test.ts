// What operators see from outside the node, on a real Kubernetes v1.32.6 node running the image and
// deploy/daemonset.yaml as shipped: the keeper's metrics on the node's address, and the Events it records with
// its service account's least RBAC — `kubectl describe pod` shows HostPortClosed on a pod whose hostPort answers
// on no address, HostPortRefused on a pod the plugin refuses, HostPortRepaired after a nat flush.
// With PMH_RECORD_FIXTURES=1 it also records the API server's answers to the keeper's calls (as the keeper's
// service account, and as one without RBAC) into test/fixtures/kube/, which the unit tests replay.
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Cluster, startCluster } from "../support/cluster/cluster.js";
import { APISERVER_URL } from "../support/cluster/pki.js";
import { describeCluster } from "../support/cluster/requirements.js";
import { applyPods, type HostPortPod, POLICY_PODS, REFUSED_POD, waitReady } from "../support/cluster/workloads.js";
import { eventually } from "../support/e2e.js";
import { nsRunOk } from "../support/netns.js";
import { REPO_ROOT } from "../support/paths.js";
import { NODE_IP1 } from "../support/topology.js";

const IMAGE_ARCHIVE = join(REPO_ROOT, "dist/portmap-hostip-image-amd64.tar");
const DS = ["-n", "kube-system", "ds/portmap-hostip"];
/** A runtime hostIP of a family the pod lacks (the cluster is IPv4): portmap writes no rule, the port answers nowhere. */
const CLOSED_POD: HostPortPod = { name: "closed", hostPort: 8084, hostIP: "2001:db8::10" };
const REPAIRED_POD = POLICY_PODS.neither;
const FIXTURES = join(REPO_ROOT, "test/fixtures/kube");

describeCluster(
  "the keeper as deployed: metrics and Events",
  () => {
    let c: Cluster;

    beforeAll(async () => {
      c = await startCluster({ images: [IMAGE_ARCHIVE] });
      await c.kubectlOk(["apply", "-f", join(REPO_ROOT, "deploy/daemonset.yaml")]);
      await c.kubectlOk(["rollout", "status", ...DS, "--timeout=120s"], { timeoutMs: 130_000 });
      await applyPods(c, [CLOSED_POD, REFUSED_POD, REPAIRED_POD]);
      await waitReady(c, [CLOSED_POD, REPAIRED_POD]);
    });

    afterAll(async () => {
      await c?.stop();
    });

    /** The pod's Events of `reason` (their messages), as the API server has them. */
    const events = async (pod: string, reason: string): Promise<string> =>
      c.kubectlOk([
        ...["get", "events", "--field-selector", `involvedObject.name=${pod},reason=${reason}`],
        ...["-o", "jsonpath={.items[*].message}"],
      ]);
    /** The messages of the pod's Events of `reason`, once there is one (within 60 s). */
    const recorded = async (pod: string, reason: string): Promise<string> => {
      await eventually(`${reason} on ${pod}`, async () => (await events(pod, reason)) !== "", 60_000);
      return events(pod, reason);
    };
    const described = (pod: string) => c.kubectlOk(["describe", "pod", pod]);

    it("serves Prometheus metrics on the node's address, port 9731", async () => {
      await eventually("the metrics show the node's mappings", async () => {
        const text = await nsRunOk(c.topo.node, "curl", ["-s", "--max-time", "5", `http://${NODE_IP1}:9731/metrics`]);
        return /^portmap_hostip_mappings\{state="scoped",family="4"\} [1-9]/m.test(text);
      });
    });

    it("a pod whose hostPort answers on no address: HostPortClosed, with the reason", async () => {
      expect(await recorded(CLOSED_POD.name, "HostPortClosed")).toBe(
        `${c.nodeName}: hostPort 8084/tcp answers on no address: hostIP 2001:db8::10 (from the runtime) is IPv6: the pod has only IPv4 addresses`,
      );
      expect(await described(CLOSED_POD.name)).toMatch(/Warning\s+HostPortClosed\s+\S+\s+portmap-hostip/);
    });

    it("a pod the plugin refuses: HostPortRefused, with the plugin's message", async () => {
      expect(await recorded(REFUSED_POD.name, "HostPortRefused")).toContain(
        `host IP ${REFUSED_POD.annotation} (from annotation) for hostPort 8083/tcp of pod default/refused`,
      );
      expect(await described(REFUSED_POD.name)).toMatch(/Warning\s+HostPortRefused\s+\S+\s+portmap-hostip/);
    });

    it("a nat flush the keeper repaired: HostPortRepaired; the metrics count it", async () => {
      await nsRunOk(c.topo.node, "iptables", ["-t", "nat", "-F"]);
      expect(await recorded(REPAIRED_POD.name, "HostPortRepaired")).toMatch(
        new RegExp(`^${c.nodeName}: its hostPort rules \\(IPv4 CNI-DN-\\w+\\) were missing or changed: rebuilt`),
      );
      expect(await described(REPAIRED_POD.name)).toMatch(/Normal\s+HostPortRepaired\s+\S+\s+portmap-hostip/);
      const text = await nsRunOk(c.topo.node, "curl", ["-s", "--max-time", "5", `http://${NODE_IP1}:9731/metrics`]);
      expect(text).toMatch(/^portmap_hostip_repairs_total\{cause="chain_rebuilt"\} [1-9]/m);
      expect(text).toMatch(/^portmap_hostip_failures_total\{kind="event"\} 0$/m);
    });

    it.runIf(process.env["PMH_RECORD_FIXTURES"] === "1")("records the API server's answers", async () => {
      await c.kubectlOk(["create", "serviceaccount", "pmh-no-rbac"]);
      const token = async (sa: string, ns: string) => (await c.kubectlOk(["create", "token", sa, "-n", ns])).trim();
      const keeper = await token("portmap-hostip", "kube-system");
      const nobody = await token("pmh-no-rbac", "default");
      const call = async (as: string, method: string, path: string, body?: object) => {
        const r = await c.nodeExec("curl", [
          ...["-s", "--max-time", "10", "--cacert", join(c.dir, "pki/ca.crt"), "-X", method],
          ...["-H", `Authorization: Bearer ${as}`, "-H", "Accept: application/json"],
          ...(body ? ["-H", "Content-Type: application/json", "--data-binary", JSON.stringify(body)] : []),
          ...["-w", "\n%{http_code}", `${APISERVER_URL}${path}`],
        ]);
        const cut = r.stdout.lastIndexOf("\n");
        return { status: Number(r.stdout.slice(cut + 1)), body: JSON.parse(r.stdout.slice(0, cut)) as unknown };
      };
      const uid = await c.kubectlOk(["get", "pod", REPAIRED_POD.name, "-o", "jsonpath={.metadata.uid}"]);
      const event = {
        apiVersion: "v1",
        kind: "Event",
        metadata: { generateName: `${REPAIRED_POD.name}.`, namespace: "default" },
        involvedObject: { apiVersion: "v1", kind: "Pod", namespace: "default", name: REPAIRED_POD.name, uid },
        reason: "HostPortRepaired",
        message: "recorded",
        type: "Normal",
        source: { component: "portmap-hostip", host: c.nodeName },
        firstTimestamp: new Date().toISOString(),
        lastTimestamp: new Date().toISOString(),
        count: 1,
      };
      const answers = {
        "post-event-created": await call(keeper, "POST", "/api/v1/namespaces/default/events", event),
        "post-event-forbidden": await call(nobody, "POST", "/api/v1/namespaces/default/events", event),
        "get-pod": await call(keeper, "GET", `/api/v1/namespaces/default/pods/${REPAIRED_POD.name}`),
        "get-pod-missing": await call(keeper, "GET", "/api/v1/namespaces/default/pods/no-such-pod"),
      };
      mkdirSync(FIXTURES, { recursive: true });
      for (const [name, answer] of Object.entries(answers))
        writeFileSync(join(FIXTURES, `${name}.json`), `${JSON.stringify(answer, null, 2)}\n`);
      expect(Object.values(answers).map((r) => r.status)).toEqual([201, 403, 200, 404]);
    });
  },
  existsSync(IMAGE_ARCHIVE) ? [] : [`${IMAGE_ARCHIVE} (node scripts/build-image.mjs)`],
);
