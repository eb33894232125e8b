// What the cluster tests run and check: hostPort pods (the echo server, test/support/cluster/echo.c) applied
// with kubectl, who answers each one's port from the client, and what a deleted pod may leave on the node.
import { readdirSync } from "node:fs";
import { ECHO_IMAGE } from "../cri/image.js";
import { natSave } from "../iptables.js";
import { CLUSTER_IP, FOREIGN_IP, NODE_IP1, NODE_IP2 } from "../topology.js";
import { whoAnswers } from "../traffic.js";
import type { Cluster } from "./cluster.js";

export const HOST_IP_ANNOTATION = "portmap-hostip/host-ip";

export interface HostPortPod {
  name: string;
  hostPort: number;
  /** ports[].hostIP */
  hostIP?: string;
  /** The plugin's host-IP annotation. */
  annotation?: string;
}

/** The policy's three ways (under defaultHostIP "node") and one it refuses: the pods. */
export const POLICY_PODS = {
  annotated: { name: "annotated", hostPort: 8080, annotation: NODE_IP2 },
  "host-ip": { name: "host-ip", hostPort: 8081, hostIP: NODE_IP2 },
  neither: { name: "neither", hostPort: 8082 },
} satisfies Record<string, HostPortPod>;
export const REFUSED_POD: HostPortPod = { name: "refused", hostPort: 8083, annotation: FOREIGN_IP };

/** Who must answer a pod's hostPort on each address (null: nobody); the ClusterIP always its Service. */
export function expectedAnswers(pod: HostPortPod): Record<string, string | null> {
  const own = `pod-${pod.name}`;
  const onlyIp2 = pod.annotation === NODE_IP2 || pod.hostIP === NODE_IP2;
  return { [NODE_IP1]: onlyIp2 ? null : own, [NODE_IP2]: own, [CLUSTER_IP]: "service" };
}

/** Who answers the pod's hostPort on each address, from the client namespace. */
export async function answers(c: Cluster, pod: HostPortPod): Promise<Record<string, string | null>> {
  const out: Record<string, string | null> = {};
  for (const ip of [NODE_IP1, NODE_IP2, CLUSTER_IP]) out[ip] = await whoAnswers(c.topo.client, "tcp", ip, pod.hostPort);
  return out;
}

export function podManifest(pod: HostPortPod): object {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: pod.name,
      labels: { "pmh-test": "hostport" },
      ...(pod.annotation ? { annotations: { [HOST_IP_ANNOTATION]: pod.annotation } } : {}),
    },
    spec: {
      automountServiceAccountToken: false,
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: "echo",
          image: ECHO_IMAGE,
          imagePullPolicy: "Never",
          args: [`pod-${pod.name}`, "tcp:80"],
          ports: [{ containerPort: 80, hostPort: pod.hostPort, ...(pod.hostIP ? { hostIP: pod.hostIP } : {}) }],
        },
      ],
    },
  };
}

/** Applies the policy's pods and the refused one, and waits until the first three are ready. */
export async function startPolicyPods(c: Cluster): Promise<void> {
  const pods = Object.values(POLICY_PODS);
  await applyPods(c, [...pods, REFUSED_POD]);
  await waitReady(c, pods);
}

/** Who answers each policy pod's port (`actual`), and who must (`expected`), by pod name. */
export async function policyAnswers(c: Cluster): Promise<{ actual: object; expected: object }> {
  const actual: Record<string, object> = {};
  const expected: Record<string, object> = {};
  for (const pod of Object.values(POLICY_PODS)) {
    actual[pod.name] = await answers(c, pod);
    expected[pod.name] = expectedAnswers(pod);
  }
  return { actual, expected };
}

/** Deletes every pod the tests applied, then returns podTraces(). */
export async function deleteTestPods(c: Cluster): ReturnType<typeof podTraces> {
  await c.kubectlOk(["delete", "pod", "-l", "pmh-test=hostport", "--wait", "--timeout=60s"], { timeoutMs: 70_000 });
  return podTraces(c);
}

/** Applies the pods with `kubectl apply -f -`. */
export async function applyPods(c: Cluster, pods: HostPortPod[]): Promise<void> {
  await c.kubectlOk(["apply", "-f", "-"], {
    input: JSON.stringify({ apiVersion: "v1", kind: "List", items: pods.map(podManifest) }),
  });
}

export async function waitReady(c: Cluster, pods: HostPortPod[], timeoutS = 90): Promise<void> {
  await c.kubectlOk(["wait", "--for=condition=Ready", `--timeout=${timeoutS}s`, ...pods.map((p) => `pod/${p.name}`)], {
    timeoutMs: (timeoutS + 10) * 1000,
  });
}

/** `kubectl describe pod` once its events name the plugin's refusal (the foreign address), within 90 s. */
export async function refusalEvents(c: Cluster, pod: HostPortPod): Promise<string> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    const text = await c.kubectlOk(["describe", "pod", pod.name]);
    if (text.includes("FailedCreatePodSandBox") && text.includes(pod.annotation ?? "")) return text;
    if (Date.now() > deadline) throw new Error(`no refusal in the events of ${pod.name} within 90 s:\n${text}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** What pods may leave on the node: portmap's per-pod chains and jumps, libcni cache entries, IP leases. */
export async function podTraces(c: Cluster): Promise<{ nat: string[]; cache: string[]; leases: string[] }> {
  const list = (dir: string) => {
    try {
      return readdirSync(c.nodePath(dir));
    } catch {
      return [];
    }
  };
  return {
    nat: (await natSave(c.topo.node, 4)).filter((l) => /CNI-DN-|-A CNI-HOSTPORT-DNAT/.test(l)),
    cache: list("/var/lib/cni/results").filter((f) => f.startsWith("cbr0-")),
    // host-local's files besides the leases: its lock and the last address it gave.
    leases: list("/var/lib/cni/networks/cbr0").filter((f) => !["lock", "last_reserved_ip.0"].includes(f)),
  };
}
