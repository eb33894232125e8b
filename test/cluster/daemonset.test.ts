// The product as a cluster runs it: the image deploy/Dockerfile builds (scripts/build-image.mjs, imported into
// the node's containerd under the name the manifest gives it) and deploy/daemonset.yaml applied unchanged with
// kubectl, on a real Kubernetes v1.32.6 node with flannel's conflist. Then what operators do: hostPort pods, the
// operator commands through `kubectl exec` as docs/operating.md writes them, a flushed nat table and a rewritten
// conflist, a restart, an upgrade by `kubectl set image` while pods start, and the removal as docs/install.md
// writes it (deleting the DaemonSet, then deploy/uninstall.yaml).
import { createHash } from "node:crypto";
import { appendFileSync, copyFileSync, existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Cluster, startCluster } from "../support/cluster/cluster.js";
import { imageWithExecutable } from "../support/cluster/image-variant.js";
import { describeCluster } from "../support/cluster/requirements.js";
import {
  answers,
  applyPods,
  deleteTestPods,
  expectedAnswers,
  type HostPortPod,
  POLICY_PODS,
  policyAnswers,
  REFUSED_POD,
  refusalEvents,
  startPolicyPods,
  waitReady,
} from "../support/cluster/workloads.js";
import { commands, section } from "../support/docs.js";
import { eventually } from "../support/e2e.js";
import { makeTempDir, nsRunOk, removeTempDir } from "../support/netns.js";
import { REPO_ROOT } from "../support/paths.js";
import { CLUSTER_IP, NODE_IP1 } from "../support/topology.js";

const { version } = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string };
/** What scripts/build-image.mjs writes: the amd64 image, named as the manifest's `portmap-hostip:<version>`. */
const IMAGE_ARCHIVE = join(REPO_ROOT, "dist/portmap-hostip-image-amd64.tar");
const EXECUTABLE = join(REPO_ROOT, "dist/portmap-hostip-linux-x64");
const NEXT = `portmap-hostip:${version}-next`;
const CONFLIST = "/etc/cni/net.d/10-flannel.conflist";
const PLUGIN = "/opt/cni/bin/portmap-hostip";
const FLANNEL_CONFLIST = join(REPO_ROOT, "test/fixtures/flannel/cni-conf.json");
const DS = ["-n", "kube-system", "ds/portmap-hostip"];

/** Pods started one a second while the DaemonSet's pod is replaced (at most this many). */
const upgradePods: HostPortPod[] = Array.from({ length: 15 }, (_, i) => ({ name: `upgrade-${i}`, hostPort: 8090 + i }));
const afterDelete: HostPortPod = { name: "after-delete", hostPort: 8110 };
const afterUninstall: HostPortPod = { name: "after-uninstall", hostPort: 8111 };
const ALL = [...Object.values(POLICY_PODS), REFUSED_POD, ...upgradePods, afterDelete, afterUninstall];

const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

/** The kubectl command lines of a section of the docs, as argument lists (the docs quote nothing). */
function kubectlLines(file: string, heading: string): string[][] {
  return commands(section(readFileSync(join(REPO_ROOT, file), "utf8"), heading)).map((line) => {
    const [tool, ...args] = line.split(" ");
    if (tool !== "kubectl" || /["'\\]/.test(line)) throw new Error(`not a kubectl line the test can run: ${line}`);
    return args;
  });
}

describeCluster(
  "deploy/daemonset.yaml applied with kubectl, the image built from deploy/Dockerfile",
  () => {
    let c: Cluster;
    let work: string;

    beforeAll(async () => {
      work = makeTempDir("pmh-next-image");
      c = await startCluster({ images: [IMAGE_ARCHIVE] });
      await c.topo.serveService({ tcp: ALL.map((p) => p.hostPort) });
    });

    afterAll(async () => {
      await c?.stop();
      if (work) removeTempDir(work);
    });

    const plugins = () =>
      (JSON.parse(readFileSync(c.nodePath(CONFLIST), "utf8")) as { plugins: Array<Record<string, unknown>> }).plugins;
    const logs = async (container: string) => c.kubectlOk(["logs", ...DS, "-c", container]);
    const rollout = () => c.kubectlOk(["rollout", "status", ...DS, "--timeout=120s"], { timeoutMs: 130_000 });

    it("runs: the init step installs, the keeper starts, kubelet's probes pass, status.hostIPs reaches the entry", async () => {
      await c.kubectlOk(["apply", "-f", join(REPO_ROOT, "deploy/daemonset.yaml")]);
      await rollout();
      expect(plugins().map((p) => p["type"])).toEqual(["flannel", "portmap", "portmap-hostip"]);
      expect(plugins()[2]?.["kubeNodeIPs"]).toEqual([NODE_IP1]);
      // The image's own executable (the one in dist/ may have been built again since).
      const inImage = await c.kubectlOk(["exec", ...DS, "-c", "watch", "--", "sha256sum", "/portmap-hostip"]);
      expect(inImage.split(" ")[0]).toBe(sha256(c.nodePath(PLUGIN)));
      expect(await logs("install")).toContain(`installed /host${PLUGIN}`);
      expect(await logs("watch")).toMatch(/^keeper: watching .*the nat table \(iptables-nft\)/m);
      // Ready: the readiness probe (install --check, run by kubelet in the container) passed; nothing restarted.
      const restarts = await c.kubectlOk([
        ...["get", "pods", "-n", "kube-system", "-l", "app.kubernetes.io/name=portmap-hostip", "-o"],
        "jsonpath={.items[*].status.containerStatuses[*].restartCount}",
      ]);
      expect(restarts).toBe("0");
      const status = await c.kubectl(["exec", ...DS, "-c", "watch", "--", "/portmap-hostip", "status"]);
      expect(status.code, status.stderr).toBe(0);
    });

    it("hostPort pods answer exactly where the policy says; a refused pod's events show the plugin's message", async () => {
      await startPolicyPods(c);
      const { actual, expected } = await policyAnswers(c);
      expect(actual).toEqual(expected);
      expect(await refusalEvents(c, REFUSED_POD)).toMatch(/portmap-hostip/);
    });

    it("the operator commands run through kubectl exec as docs/operating.md writes them", async () => {
      const checks: Record<string, (out: string) => void> = {
        status: (out) => {
          for (const pod of Object.values(POLICY_PODS)) expect(out).toContain(`default/${pod.name}`);
          expect(out).toContain("scoped");
        },
        reconcile: (out) => expect(out).toMatch(/IPv4: \d+ attachment\(s\) correct, left alone; 0 rebuilt/),
        gc: (out) => expect(out).toContain("no orphan portmap chains"),
        logs: (out) => expect(out).toContain("keeper: watching"),
        get: (out) => expect(out).toMatch(/portmap-hostip-\w+ +1\/1 +Running/),
      };
      const ran = new Set<string>();
      for (const args of kubectlLines("docs/operating.md", "On a cluster: `kubectl exec`")) {
        const r = await c.kubectl(args);
        expect(r.code, `kubectl ${args.join(" ")}\n${r.stderr}`).toBe(0);
        const command = args[0] === "exec" ? (args[args.indexOf("--") + 2] ?? "") : (args[0] ?? "");
        checks[command]?.(r.stdout);
        ran.add(command);
      }
      expect([...ran].sort()).toEqual(Object.keys(checks).sort());
    });

    it("the keeper in its container repairs a nat flush and a conflist rewrite", async () => {
      await nsRunOk(c.topo.node, "iptables", ["-t", "nat", "-F"]);
      await eventually("every pod answers as before the flush", async () => {
        const { actual, expected } = await policyAnswers(c);
        return JSON.stringify(actual) === JSON.stringify(expected);
      });
      // flannel's rewrite at its pod's restart: the ConfigMap's conflist, without our entry.
      copyFileSync(FLANNEL_CONFLIST, c.nodePath(CONFLIST));
      await eventually("the entry back", async () => plugins().length === 3, 5_000);
      expect(await logs("watch")).toMatch(/keeper \(rules changed\): /);
    });

    it("a restarted pod does not copy the executable again", async () => {
      const before = statSync(c.nodePath(PLUGIN)).ino;
      await c.kubectlOk(["rollout", "restart", ...DS]);
      await rollout();
      expect(await logs("install")).toContain(`/host${PLUGIN} is this executable already`);
      expect(statSync(c.nodePath(PLUGIN)).ino).toBe(before);
    });

    it("kubectl set image: pods started during the rolling update all start, scoped; the new executable is in place", async () => {
      const next = join(work, "portmap-hostip");
      copyFileSync(EXECUTABLE, next);
      appendFileSync(next, "another build");
      await c.importImage(await imageWithExecutable(IMAGE_ARCHIVE, next, `docker.io/library/${NEXT}`, work));
      // The DaemonSet's pods as IMAGE=READY pairs.
      const daemonPods = () =>
        c.kubectlOk([
          ...["get", "pods", "-n", "kube-system", "-l", "app.kubernetes.io/name=portmap-hostip", "-o"],
          'jsonpath={range .items[*]}{.spec.containers[0].image}={.status.conditions[?(@.type=="Ready")].status} {end}',
        ]);
      await c.kubectlOk(["set", "image", ...DS, `install=${NEXT}`, `watch=${NEXT}`]);
      // One pod a second until the new pod is ready, noting what ran on the node when each was applied.
      const started: Array<{ pod: HostPortPod; daemon: string }> = [];
      for (const pod of upgradePods) {
        const daemon = (await daemonPods()).trim();
        if (daemon === `${NEXT}=True`) break;
        await applyPods(c, [pod]);
        started.push({ pod, daemon });
        await new Promise((r) => setTimeout(r, 1000));
      }
      await rollout();
      // Some started while no keeper was ready: the old one ending, the new one installing.
      expect(started.filter((s) => !s.daemon.includes("=True")).length, JSON.stringify(started)).toBeGreaterThan(0);
      const pods = started.map((s) => s.pod);
      await waitReady(c, pods);
      for (const pod of pods) expect(await answers(c, pod), pod.name).toEqual(expectedAnswers(pod));
      const failed = await c.kubectlOk([
        ...["get", "events", "--field-selector", "reason=FailedCreatePodSandBox", "-o"],
        "jsonpath={.items[*].involvedObject.name}",
      ]);
      expect(failed.split(" ").filter((name) => name !== REFUSED_POD.name && name !== "")).toEqual([]);
      expect(sha256(c.nodePath(PLUGIN))).toBe(sha256(next));
      expect(readdirSync(c.nodePath("/opt/cni/bin")).filter((f) => f.startsWith("."))).toEqual([]);
    });

    it("the removal as docs/install.md writes it: the DaemonSet deleted leaves the plugin working; deploy/uninstall.yaml removes the entry, then the binary", async () => {
      const uninstallPods = ["-n", "kube-system", "-l", "app.kubernetes.io/name=portmap-hostip-uninstall"];
      const checks: Record<string, () => Promise<void>> = {
        "delete -n kube-system ds/portmap-hostip": async () => {
          expect(plugins().map((p) => p["type"])).toContain("portmap-hostip");
          expect(existsSync(c.nodePath(PLUGIN))).toBe(true);
          await applyPods(c, [afterDelete]);
          await waitReady(c, [afterDelete]);
          expect(await answers(c, afterDelete)).toEqual(expectedAnswers(afterDelete));
        },
        "rollout status -n kube-system ds/portmap-hostip-uninstall": async () => {
          expect(plugins().map((p) => p["type"])).toEqual(["flannel", "portmap"]);
          expect(readdirSync(c.nodePath("/opt/cni/bin")).filter((f) => f.includes("portmap-hostip"))).toEqual([]);
          // portmap alone again: the hostPort catches the ClusterIP's traffic too.
          await applyPods(c, [afterUninstall]);
          await waitReady(c, [afterUninstall]);
          expect((await answers(c, afterUninstall))[CLUSTER_IP]).toBe(`pod-${afterUninstall.name}`);
        },
        "delete -f deploy/uninstall.yaml": async () => {
          // Its pods go in the background: gone before the next test counts what is left.
          await c.kubectlOk(["wait", "--for=delete", "pod", ...uninstallPods, "--timeout=60s"], { timeoutMs: 70_000 });
        },
      };
      const ran: string[] = [];
      for (const args of kubectlLines("docs/install.md", "Removal")) {
        // kubectl's own waits (deleting, a rollout) end within the steps' bound.
        await c.kubectlOk(args, { timeoutMs: 130_000 });
        await checks[args.join(" ")]?.();
        ran.push(args.join(" "));
      }
      expect(Object.keys(checks).filter((line) => !ran.includes(line))).toEqual([]);
    });

    it("pods deleted leave no chain, jump, cache entry or address lease", async () => {
      expect(await deleteTestPods(c)).toEqual({ nat: [], cache: [], leases: [] });
    });
  },
  existsSync(IMAGE_ARCHIVE) ? [] : [`${IMAGE_ARCHIVE} (node scripts/build-image.mjs)`],
);
