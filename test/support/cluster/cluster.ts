// A real single-node Kubernetes cluster (v1.32.6) in throwaway namespaces: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet (registered), kube-proxy (iptables mode) and a private
// containerd, with flannel's CNI plugin and kube-flannel.yml's conflist (the test writes the subnet file
// flanneld would). Facts: ../shared/reference/cluster-facts.md.
//
// The node is the e2e topology's node namespace (192.0.2.10 and .11 on its uplink, ClusterIP 10.96.0.50 on
// kube-ipvs0 as IPVS mode puts it there, a client namespace behind the uplink). Every daemon runs in one PID
// and mount namespace whose PID 1 is holder.sh: the node's own /run, /var/lib, /var/log, /etc/cni and /opt/cni
// (what a DaemonSet's hostPath volumes see), and kubelet's host-wide sysctls taken by files. stop() kills that
// PID 1, which ends every process of the node at once (pods included), and the mounts go with it; then the
// containers' cgroups, the namespaces and the directory are removed.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CriClient } from "../cri/client.js";
import { cgroupMounts, configToml } from "../cri/containerd.js";
import { buildEchoImage, buildPauseImage } from "../cri/image.js";
import { type RunOptions, type RunResult, run, runOk } from "../exec.js";
import { atLastResort, netnsPath, spawnUntilReady } from "../netns.js";
import { REPO_ROOT } from "../paths.js";
import { CLUSTER_IP, createTopology, NODE_IP1, type Topology } from "../topology.js";
import { clusterBinaries } from "./binaries.js";
import { removeContainerCgroups } from "./cgroups.js";
import { hostKernelSettings, layOutNode } from "./node.js";
import { makePki, type Pki } from "./pki.js";

export const POD_CIDR = "10.244.0.0/16";
export const SERVICE_CIDR = "10.96.0.0/16";
/** The `kubernetes` Service's ClusterIP (the first of SERVICE_CIDR); CLUSTER_IP (kube-ipvs0) is another one. */
export const KUBERNETES_SERVICE_IP = "10.96.0.1";
/** The node's subnet as flanneld would write it. */
export const FLANNEL_SUBNET = "10.244.0.1/24";
export { CLUSTER_IP };

const HOLDER = join(REPO_ROOT, "test/support/cluster/holder.sh");
const CRI_NAMESPACE = "k8s.io";
// The plugins' and daemons' PATH: no node (nodes need none), iptables and friends.
const NODE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";
const SECOND = 1000;

export type Component =
  | "etcd"
  | "kube-apiserver"
  | "kube-controller-manager"
  | "kube-scheduler"
  | "containerd"
  | "kubelet"
  | "kube-proxy";

export interface ClusterOptions {
  /** OCI archives imported into containerd (namespace k8s.io) before the node registers. */
  images?: string[];
}

export interface Cluster {
  topo: Topology;
  nodeName: string;
  /** The cluster's directory (certificates, configurations, logs, the node's private files). */
  dir: string;
  /** kubectl as cluster admin, in the node's network namespace; never throws for a non-zero exit. */
  kubectl(args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** kubectl(), throwing unless it exits 0; resolves with its stdout. */
  kubectlOk(args: readonly string[], opts?: RunOptions): Promise<string>;
  /** Runs a program as the node does: in its network, mount and PID namespaces. */
  nodeExec(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** A path of the node's filesystem (its /etc/cni, /opt/cni, /run, /var/lib, …) as seen from here. */
  nodePath(path: string): string;
  /** The network namespace of a running pod's sandbox, as a path to hand to nsenter or `ip netns attach`. */
  podNetns(namespace: string, name: string): Promise<string>;
  /** Imports an OCI archive into the node's containerd. */
  importImage(archive: string): Promise<void>;
  /** The last lines of a component's log. */
  logTail(component: Component, lines?: number): string;
  /** Stops everything and removes everything it made; safe to call twice. */
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns true, for at most `ms`; the error names `what` and, from `detail`, why. */
async function waitFor(what: string, ms: number, probe: () => Promise<boolean>, detail: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / SECOND} s\n${detail()}`);
    await sleep(250);
  }
}

export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const binaries = await clusterBinaries();
  const topo = await createTopology();
  const dir = join(topo.tmpDir, "cluster");
  const nodeName = topo.prefix;
  const daemons = new Map<Component, ChildProcess>();
  let pki: Pki | undefined;
  let holder: ChildProcess | undefined;
  let holderPid: number | undefined;
  let cri: CriClient | undefined;
  const kernelBefore = hostKernelSettings();
  const cgroups = await cgroupMounts();
  // containerd puts a sandbox without a cgroup parent (kubelet's without QoS cgroups) in /k8s.io/<id>.
  const cgroupParents = cgroups.map(([, , target]) => join(target!, CRI_NAMESPACE));
  const madeCgroupParents = cgroupParents.filter((d) => !existsSync(d));
  const logFile = (component: Component) => join(dir, "logs", `${component}.log`);
  const logTail = (component: Component, lines = 30) => {
    try {
      return readFileSync(logFile(component), "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  };
  const ctrdDir = join(dir, "containerd");
  const socket = join(ctrdDir, "containerd.sock");

  /** Kills the node's PID 1 (so every process of the node), synchronously: also the last resort at exit. */
  const killNode = () => {
    for (const pid of [holderPid, holder?.pid])
      if (pid !== undefined)
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // gone
        }
  };
  // At exit (a run killed or interrupted) too; killed processes leave their cgroups a moment later.
  const unregister = atLastResort(() => {
    killNode();
    for (let i = 0; i < 40 && !removeCgroups(); i++) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  });

  const nodeArgs = () => ["-t", String(holderPid), "-m", "-n", "-p", "--"];
  const kubectl = (args: readonly string[], o: RunOptions = {}) =>
    run(
      "ip",
      ["netns", "exec", topo.node, binaries.kubernetes.kubectl, "--kubeconfig", pki!.kubeconfig("admin"), ...args],
      {
        timeoutMs: 60 * SECOND,
        ...o,
      },
    );
  const kubectlOk = async (args: readonly string[], o: RunOptions = {}) => {
    const r = await kubectl(args, o);
    if (r.code !== 0)
      throw new Error(`kubectl ${args.join(" ")} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout;
  };
  const nodePath = (path: string) => `/proc/${holderPid}/root${path}`;

  /** Starts a daemon in the node; fails with its log when it exits before stop(). */
  const daemon = (component: Component, program: string, args: string[]) => {
    const log = openSync(logFile(component), "a");
    const child = spawn("nsenter", [...nodeArgs(), program, ...args], {
      env: { PATH: NODE_PATH },
      stdio: ["ignore", log, log],
    });
    closeSync(log);
    daemons.set(component, child);
  };
  const exited = () => [...daemons].filter(([, c]) => c.exitCode !== null || c.signalCode !== null).map(([n]) => n);
  const failures = () =>
    exited()
      .map((n) => `${n} exited:\n${logTail(n)}`)
      .join("\n");

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    const errors: unknown[] = [];
    cri?.close();
    killNode();
    const gone = [holder, ...daemons.values()].filter((c): c is ChildProcess => c !== undefined);
    await Promise.all(
      gone.map((c) =>
        c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once("exit", r)),
      ),
    );
    // The PID namespace is gone when its PID 1 is: wait until no process of it is left (its cgroups empty).
    try {
      await waitFor(
        "the containers' cgroups removed",
        10 * SECOND,
        async () => removeCgroups(),
        () => "",
      );
    } catch (e) {
      errors.push(e);
    }
    unregister();
    await topo.destroy().catch((e: unknown) => errors.push(e));
    const kernelAfter = hostKernelSettings();
    if (JSON.stringify(kernelAfter) !== JSON.stringify(kernelBefore))
      errors.push(new Error(`the machine's kernel settings changed: ${JSON.stringify({ kernelBefore, kernelAfter })}`));
    if (errors.length > 0) throw new AggregateError(errors, `stopping the cluster in ${dir} failed`);
  };

  /** rmdir of the cgroups containerd made for this node's containers; true when none is left. */
  const removeCgroups = (): boolean => {
    const tasks = join(ctrdDir, "state", "io.containerd.runtime.v2.task", CRI_NAMESPACE);
    return removeContainerCgroups(cgroupParents, madeCgroupParents, existsSync(tasks) ? readdirSync(tasks) : []);
  };

  try {
    for (const d of ["logs", "pki", "etcd", "kubelet-pki", "controller-manager", "scheduler", "containerd"])
      mkdirSync(join(dir, d), { recursive: true });
    const certs = await makePki(join(dir, "pki"), { name: nodeName, ip: NODE_IP1 }, KUBERNETES_SERVICE_IP);
    holder = await spawnUntilReady(
      "nsenter",
      [
        `--net=${netnsPath(topo.node)}`,
        ...["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "slave"],
        ...["bash", HOLDER, dir],
      ],
      "ready",
      15 * SECOND,
      "the node's namespaces (holder.sh)",
    );
    const children = readFileSync(`/proc/${holder.pid}/task/${holder.pid}/children`, "utf8").trim();
    holderPid = Number(children);
    if (!Number.isInteger(holderPid) || holderPid <= 0) throw new Error(`holder.sh's PID not found: "${children}"`);
    layOutNode(nodePath, binaries, { network: POD_CIDR, subnet: FLANNEL_SUBNET });

    daemon("etcd", binaries.etcd, etcdArgs(join(dir, "etcd")));
    pki = certs;
    daemon("kube-apiserver", binaries.kubernetes["kube-apiserver"], apiserverArgs(certs));
    writeFileSync(
      join(ctrdDir, "config.toml"),
      configToml({
        root: join(ctrdDir, "root"),
        state: join(ctrdDir, "state"),
        socket,
        runcRoot: join(ctrdDir, "runc"),
        binDir: "/opt/cni/bin",
        confDir: "/etc/cni/net.d",
      }),
    );
    daemon("containerd", "/usr/bin/containerd", ["--config", join(ctrdDir, "config.toml")]);
    cri = new CriClient(socket);
    const client = cri;
    await waitFor(
      "containerd serving CRI",
      30 * SECOND,
      async () =>
        existsSync(socket) &&
        (await client.version(2000).then(
          () => true,
          () => false,
        )),
      failures,
    );
    const images = [
      await buildPauseImage(join(dir, "pause-image")),
      await buildEchoImage(join(dir, "echo-image")),
      ...(opts.images ?? []),
    ];
    for (const image of images) await importInto(socket, image);
    await waitFor(
      "kube-apiserver ready",
      60 * SECOND,
      async () => (await kubectl(["get", "--raw", "/readyz"], { timeoutMs: 10 * SECOND })).stdout === "ok",
      () => `${failures()}\n${logTail("kube-apiserver")}`,
    );
    daemon(
      "kube-controller-manager",
      binaries.kubernetes["kube-controller-manager"],
      controllerManagerArgs(certs, dir),
    );
    daemon("kube-scheduler", binaries.kubernetes["kube-scheduler"], schedulerArgs(certs, dir));
    const kubeletConfig = join(dir, "kubelet.yaml");
    writeFileSync(kubeletConfig, JSON.stringify(kubeletConfiguration(certs, socket), null, 2));
    daemon("kubelet", binaries.kubernetes.kubelet, [
      ...["--config", kubeletConfig, "--kubeconfig", certs.kubeconfig("kubelet")],
      ...["--cert-dir", join(dir, "kubelet-pki"), "--hostname-override", nodeName, "--node-ip", NODE_IP1],
    ]);
    const proxyConfig = join(dir, "kube-proxy.yaml");
    writeFileSync(proxyConfig, JSON.stringify(kubeProxyConfiguration(certs, nodeName), null, 2));
    daemon("kube-proxy", binaries.kubernetes["kube-proxy"], ["--config", proxyConfig]);
    await waitFor(
      `node ${nodeName} Ready`,
      90 * SECOND,
      async () =>
        (
          await kubectl([
            ...["get", "node", nodeName, "-o"],
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
          ])
        ).stdout === "True",
      () => `${failures()}\n${logTail("kubelet")}`,
    );
    // Pods are admitted once their namespace's default service account exists.
    await waitFor(
      "the default service account",
      30 * SECOND,
      async () => (await kubectl(["get", "serviceaccount", "default"])).code === 0,
      failures,
    );
  } catch (e) {
    await stop().catch(() => {});
    throw e;
  }

  return {
    topo,
    nodeName,
    dir,
    kubectl,
    kubectlOk,
    nodeExec: (cmd, args, o = {}) => run("nsenter", [...nodeArgs(), cmd, ...args], { env: { PATH: NODE_PATH }, ...o }),
    nodePath,
    async podNetns(namespace, name) {
      const sandboxes = await cri!.listPodSandbox({
        "io.kubernetes.pod.namespace": namespace,
        "io.kubernetes.pod.name": name,
      });
      const ready = sandboxes.find((s) => s.state === "SANDBOX_READY");
      if (!ready) throw new Error(`pod ${namespace}/${name} has no running sandbox`);
      const status = await cri!.podSandboxStatus(ready.id, true);
      const pid = (JSON.parse(status.info["info"] ?? "{}") as { pid?: number }).pid;
      if (!pid) throw new Error(`no pid in the status of ${namespace}/${name}'s sandbox`);
      // The PID is one of the node's PID namespace: its /proc is the one holder.sh's root shows.
      return nodePath(`/proc/${pid}/ns/net`);
    },
    importImage: (archive) => importInto(socket, archive),
    logTail,
    stop,
  };
}

async function importInto(socket: string, archive: string): Promise<void> {
  await runOk("ctr", ["--address", socket, "--namespace", CRI_NAMESPACE, "images", "import", archive], {
    timeoutMs: 120 * SECOND,
  });
}

function etcdArgs(dataDir: string): string[] {
  return [
    ...["--name", "pmh", "--data-dir", dataDir],
    ...["--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379"],
    ...["--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380"],
    ...["--initial-cluster", "pmh=http://127.0.0.1:2380", "--listen-metrics-urls", "http://127.0.0.1:2381"],
  ];
}

function apiserverArgs(pki: Pki): string[] {
  return [
    "--etcd-servers=http://127.0.0.1:2379",
    "--secure-port=6443",
    `--advertise-address=${NODE_IP1}`,
    `--client-ca-file=${pki.ca}`,
    `--tls-cert-file=${pki.apiserver.cert}`,
    `--tls-private-key-file=${pki.apiserver.key}`,
    `--kubelet-client-certificate=${pki.apiserverKubeletClient.cert}`,
    `--kubelet-client-key=${pki.apiserverKubeletClient.key}`,
    `--kubelet-certificate-authority=${pki.ca}`,
    // By host name it would ask DNS, and `kubectl logs` and `exec` would time out.
    "--kubelet-preferred-address-types=InternalIP,Hostname",
    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
    `--service-account-key-file=${pki.serviceAccount.pub}`,
    `--service-account-signing-key-file=${pki.serviceAccount.key}`,
    `--service-cluster-ip-range=${SERVICE_CIDR}`,
    "--authorization-mode=Node,RBAC",
    "--enable-admission-plugins=NodeRestriction",
    "--allow-privileged=true",
    // Without it the scheduler and controller-manager log a missing CA bundle again and again.
    `--requestheader-client-ca-file=${pki.ca}`,
    "--requestheader-allowed-names=front-proxy-client",
    "--requestheader-username-headers=X-Remote-User",
    "--requestheader-group-headers=X-Remote-Group",
    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
  ];
}

/** What the controller-manager and the scheduler share: their kubeconfig (thrice), a local port, no election. */
function controllerArgs(kubeconfig: string, certDir: string): string[] {
  return [
    `--kubeconfig=${kubeconfig}`,
    `--authentication-kubeconfig=${kubeconfig}`,
    `--authorization-kubeconfig=${kubeconfig}`,
    "--bind-address=127.0.0.1",
    `--cert-dir=${certDir}`,
    "--leader-elect=false",
  ];
}

function controllerManagerArgs(pki: Pki, dir: string): string[] {
  return [
    ...controllerArgs(pki.kubeconfig("kube-controller-manager"), join(dir, "controller-manager")),
    "--use-service-account-credentials=true",
    `--service-account-private-key-file=${pki.serviceAccount.key}`,
    `--root-ca-file=${pki.ca}`,
    `--cluster-signing-cert-file=${pki.ca}`,
    `--cluster-signing-key-file=${pki.caKey}`,
    `--service-cluster-ip-range=${SERVICE_CIDR}`,
    "--allocate-node-cidrs=true",
    `--cluster-cidr=${POD_CIDR}`,
    "--node-cidr-mask-size=24",
  ];
}

function schedulerArgs(pki: Pki, dir: string): string[] {
  return controllerArgs(pki.kubeconfig("kube-scheduler"), join(dir, "scheduler"));
}

function kubeletConfiguration(pki: Pki, socket: string): object {
  return {
    apiVersion: "kubelet.config.k8s.io/v1beta1",
    kind: "KubeletConfiguration",
    containerRuntimeEndpoint: `unix://${socket}`,
    // The machine's cgroups are not ours to arrange.
    cgroupDriver: "cgroupfs",
    cgroupsPerQOS: false,
    enforceNodeAllocatable: [],
    failSwapOn: false,
    authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: pki.ca } },
    authorization: { mode: "Webhook" },
    tlsCertFile: pki.kubeletServing.cert,
    tlsPrivateKeyFile: pki.kubeletServing.key,
    readOnlyPort: 0,
    healthzBindAddress: "127.0.0.1",
    clusterDNS: ["10.96.0.10"],
    clusterDomain: "cluster.local",
    // A small, shared disk would otherwise evict pods and collect the imported images.
    evictionHard: { "nodefs.available": "1%", "imagefs.available": "1%", "memory.available": "100Mi" },
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
  };
}

function kubeProxyConfiguration(pki: Pki, nodeName: string): object {
  return {
    apiVersion: "kubeproxy.config.k8s.io/v1alpha1",
    kind: "KubeProxyConfiguration",
    clientConnection: { kubeconfig: pki.kubeconfig("kube-proxy") },
    mode: "iptables",
    clusterCIDR: POD_CIDR,
    hostnameOverride: nodeName,
    healthzBindAddress: "127.0.0.1:10256",
    metricsBindAddress: "127.0.0.1:10249",
    // Zeros: otherwise kube-proxy writes the machine-wide conntrack sysctls.
    conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: "0s", tcpCloseWaitTimeout: "0s" },
    iptables: { localhostNodePorts: false },
  };
}
