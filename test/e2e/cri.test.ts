// The plugin under a real container runtime: Debian's containerd and runc, driven through CRI v1 as kubelet
// drives them, inside the e2e node namespace. One containerd per run of this file; the pods of all scenarios
// start in one batch after the first. containerd runs the real chain (bridge + host-local → portmap →
// portmap-hostip) from its conf dir, writes libcni's cache under the shared /var/lib/cni (hence a network name
// unique to this run), and sends the plugin whatever it sends; a recorder in front of the plugin keeps each
// call for the fixtures.
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { DEFAULT_STATE_DIR } from "../../src/core/config.js";
import { recordPath } from "../../src/host/record.js";
import { type CriPortMapping, grpcMessage } from "../support/cri/client.js";
import { Containerd, LIBCNI_CACHE_DIR } from "../support/cri/containerd.js";
import {
  callShapes,
  normaliseCall,
  type PodShape,
  readFixture,
  recordFixtures,
  shapeCalls,
} from "../support/cri/recordings.js";
import { describeAsRoot } from "../support/e2e.js";
import { runOk } from "../support/exec.js";
import {
  bridgeConflist,
  CLUSTER_IP,
  createHarness,
  dnChainName,
  FOREIGN_IP,
  type Harness,
  NODE_IP1,
  NODE_IP2,
  natSave,
  type Pod,
  pluginBinary,
  type Topology,
  whoAnswers,
} from "../support/harness.js";
import { attachNetns, netnsPath, nsRunOk } from "../support/netns.js";
import { pluginPath } from "../support/paths.js";

const HOST_IP_ANNOTATION = "portmap-hostip/host-ip";
const K8S_NAMESPACE = "e2e";

/** The pod shapes of the scenarios: CRI port mappings, annotations, and the ports its server answers on. */
const SHAPES = {
  // 1: hostPort pod with the host-IP annotation.
  annotated: {
    ports: [{ containerPort: 80, hostPort: 8080 }],
    annotations: { [HOST_IP_ANNOTATION]: NODE_IP2 },
    serve: { tcp: [80] },
  },
  // 2: hostPort pod without annotation under defaultHostIP "node".
  node: { ports: [{ containerPort: 80, hostPort: 8081 }], annotations: {}, serve: { tcp: [80] } },
  // 3: UDP hostPort.
  udp: { ports: [{ protocol: "UDP", containerPort: 53, hostPort: 8053 }], annotations: {}, serve: { udp: [53] } },
  // 4: no hostPort and no annotations; annotations but no hostPort; the CRI mapping sets host_ip itself.
  plain: { ports: [], annotations: {}, serve: undefined },
  "annotated-no-port": {
    ports: [],
    annotations: { [HOST_IP_ANNOTATION]: NODE_IP2, "example.com/team": "e2e" },
    serve: undefined,
  },
  "cri-host-ip": {
    ports: [{ containerPort: 80, hostPort: 8082, hostIp: NODE_IP2 }],
    annotations: {},
    serve: { tcp: [80] },
  },
  // 5: refused by the policy.
  foreign: {
    ports: [{ containerPort: 80, hostPort: 8083 }],
    annotations: { [HOST_IP_ANNOTATION]: FOREIGN_IP },
    serve: undefined,
  },
  "cluster-ip": {
    ports: [{ containerPort: 80, hostPort: 8084 }],
    annotations: { [HOST_IP_ANNOTATION]: CLUSTER_IP },
    serve: undefined,
  },
} satisfies Record<
  string,
  {
    ports: CriPortMapping[];
    annotations: Record<string, string>;
    serve: { tcp?: number[]; udp?: number[] } | undefined;
  }
>;
type ShapeName = keyof typeof SHAPES;
const REFUSED: ShapeName[] = ["foreign", "cluster-ip"];

interface Started {
  id: string;
  pod: Pod;
  ip: string;
}

describeAsRoot("containerd (CRI) runs the chain with portmap-hostip", () => {
  let h: Harness;
  let topo: Topology;
  let ctd: Containerd;
  let network: string;
  let dataDir: string;
  let runtime: string;
  const started = new Map<ShapeName, Started>();
  const refusals = new Map<ShapeName, unknown>();

  const uid = (name: string) =>
    `00000000-0000-4000-8000-${Object.keys(SHAPES).indexOf(name).toString().padStart(12, "0")}`;
  const config = (name: ShapeName) => ({
    metadata: { name, uid: uid(name), namespace: K8S_NAMESPACE, attempt: 0 },
    hostname: name,
    portMappings: SHAPES[name].ports,
    annotations: SHAPES[name].annotations,
    labels: { "pmh-run": topo.prefix },
    linux: { cgroupParent: `/${topo.prefix}` },
  });
  const nat = () => natSave(topo.node, 4);
  const chainOf = (name: ShapeName) => dnChainName(network, started.get(name)!.id);
  /** The container ID containerd gave a pod, from what it sent the plugin (a refused pod has no other trace). */
  const idOf = (name: ShapeName) => {
    const add = ctd
      .calls()
      .find((c) => c.command === "ADD" && c.env["CNI_ARGS"]?.split(";").includes(`K8S_POD_NAME=${name}`));
    if (!add) throw new Error(`containerd never called ADD for ${name}`);
    return add.env["CNI_CONTAINERID"]!;
  };
  /** What is left of a container in the node: nat lines naming it, its cache entry, its host-local lease. */
  const tracesOf = async (id: string) => {
    const chain = dnChainName(network, id);
    const leaseDir = join(dataDir, network);
    const leases = readdirSync(leaseDir).filter(
      (f) => /^\d/.test(f) && readFileSync(join(leaseDir, f), "utf8").includes(id),
    );
    return {
      nat: (await nat()).filter((l) => l.includes(chain) || l.includes(id)),
      cache: ctd.cacheFiles().filter((f) => f.includes(id)),
      leases,
    };
  };
  const nothingLeft = { nat: [], cache: [], leases: [] };

  beforeAll(async () => {
    h = await createHarness();
    topo = h.topo;
    network = topo.prefix;
    dataDir = topo.ipamDataDir;
    // flannel's shape (cniVersion 0.3.1) with bridge + host-local in place of the flannel binary.
    // No stateDir: the recorded calls (test/fixtures/containerd) are those of the plain entry.
    const conflist = bridgeConflist({ dataDir, name: network, cniVersion: "0.3.1", stateDir: false });
    ctd = await Containerd.start({
      node: topo.node,
      dir: join(topo.tmpDir, "containerd"),
      path: pluginPath(),
      conflist,
      plugin: pluginBinary(),
      cgroupParent: `/${topo.prefix}`,
    });
    const v = await ctd.version();
    const runc = (await runOk("runc", ["--version"], { timeoutMs: 10_000 })).split("\n")[0]!;
    runtime = `${v.runtimeName} ${v.runtimeVersion} (CRI ${v.runtimeApiVersion}), ${runc}`;
    await topo.serveService({ tcp: [8080, 8081, 8082], udp: [8053] });
    const start = async (name: ShapeName) => {
      let id: string;
      try {
        id = await ctd.cri.runPodSandbox(config(name));
      } catch (err) {
        refusals.set(name, err);
        return;
      }
      // The sandbox's netns (under containerd's private mount namespace) gets a name of ours, for the pod's server.
      const ns = `${topo.prefix}-pod-${name}`;
      await attachNetns(ns, await ctd.sandboxPid(id));
      const pod: Pod = { name, ns, netnsPath: netnsPath(ns), containerID: id };
      const status = await ctd.cri.podSandboxStatus(id);
      started.set(name, { id, pod, ip: status.status.network?.ip ?? "" });
      const serve = SHAPES[name].serve;
      if (serve) await topo.servePod(pod, serve);
    };
    // The first hostPort pod alone: portmap 1.1.1 makes its top-level chains with a check, then `iptables -N`,
    // which pods started at once on a fresh node race for (one fails with "CHAIN_USER_ADD failed (File
    // exists)", seen in CI). A real node has them from its first hostPort pod, and kubelet retries a sandbox.
    const [first, ...rest] = Object.keys(SHAPES) as ShapeName[];
    await start(first!);
    await Promise.all(rest.map(start));
  }, 120_000);

  const runInfo = () => ({ network, dir: join(topo.tmpDir, "containerd"), path: pluginPath(), runtime });

  afterAll(async () => {
    const errors: unknown[] = [];
    if (ctd) {
      if (process.env["PMH_RECORD_FIXTURES"] === "1") recordFixtures(ctd, fixtureShapes(), runInfo());
      await ctd.destroy().catch((e: unknown) => errors.push(e));
    }
    for (const s of started.values()) await topo.removePod(s.pod).catch((e: unknown) => errors.push(e));
    await h?.destroy().catch((e: unknown) => errors.push(e));
    if (errors.length > 0) throw new AggregateError(errors, "containerd e2e clean-up failed");
  }, 120_000);

  const fixtureShapes = (): PodShape[] =>
    (Object.keys(SHAPES) as ShapeName[]).map((name) => ({
      name,
      id: started.get(name)?.id ?? idOf(name),
      request: { portMappings: SHAPES[name].ports, annotations: SHAPES[name].annotations },
    }));

  it("talks CRI v1 to containerd with runc, which starts every pod but those the policy refuses", async () => {
    const v = await ctd.version();
    expect(v.runtimeName).toBe("containerd");
    expect(v.runtimeApiVersion).toBe("v1");
    const messages = [...refusals].map(([name, err]) => `${name}: ${grpcMessage(err)}`).join("\n");
    expect([...refusals.keys()].sort(), messages).toEqual([...REFUSED].sort());
  });

  it("1: a hostPort pod with the host-IP annotation answers on that IP only; the ClusterIP answers the Service", async () => {
    expect(started.get("annotated")?.ip).toMatch(/^10\.244\.1\.\d+$/);
    expect(await whoAnswers(topo.client, "tcp", NODE_IP2, 8080)).toBe("pod-annotated");
    expect(await whoAnswers(topo.client, "tcp", NODE_IP1, 8080)).toBeNull();
    expect(await whoAnswers(topo.client, "tcp", CLUSTER_IP, 8080)).toBe("service");
  });

  it("2: a hostPort pod without annotation under defaultHostIP node answers on the node's addresses, not the ClusterIP", async () => {
    expect(await whoAnswers(topo.client, "tcp", NODE_IP1, 8081)).toBe("pod-node");
    expect(await whoAnswers(topo.client, "tcp", NODE_IP2, 8081)).toBe("pod-node");
    expect(await whoAnswers(topo.client, "tcp", CLUSTER_IP, 8081)).toBe("service");
  });

  it("3: a UDP hostPort answers on the node's addresses; the ClusterIP's UDP Service keeps its port", async () => {
    expect(await whoAnswers(topo.client, "udp", NODE_IP1, 8053)).toBe("pod-udp");
    expect(await whoAnswers(topo.client, "udp", CLUSTER_IP, 8053)).toBe("service");
  });

  it("4: pods without hostPort (with or without annotations) start with no chain; a CRI host_ip is kept", async () => {
    const save = await nat();
    for (const name of ["plain", "annotated-no-port"] as const) {
      expect(started.get(name)?.ip, name).toMatch(/^10\.244\.1\.\d+$/);
      expect(save.filter((l) => l.includes(chainOf(name)))).toEqual([]);
    }
    expect(await whoAnswers(topo.client, "tcp", NODE_IP2, 8082)).toBe("pod-cri-host-ip");
    expect(await whoAnswers(topo.client, "tcp", NODE_IP1, 8082)).toBeNull();
    expect(await whoAnswers(topo.client, "tcp", CLUSTER_IP, 8082)).toBe("service");
    // The plugin passed the result on unchanged: containerd got the pod's address from it.
    for (const name of ["plain", "annotated-no-port", "cri-host-ip"] as const) {
      const add = shapeCalls(ctd.calls(), started.get(name)!.id).find((c) => c.command === "ADD")!;
      expect(add.code, add.stdout).toBe(0);
    }
  });

  it("5: a pod the policy refuses fails RunPodSandbox with the plugin's code-100 message, and nothing of it is left", async () => {
    for (const name of REFUSED) {
      const err = refusals.get(name);
      expect(err, `${name} started`).toBeDefined();
      const id = idOf(name);
      const add = shapeCalls(ctd.calls(), id).find((c) => c.command === "ADD")!;
      const answer = JSON.parse(add.stdout) as { code: number; msg: string };
      expect(answer.code).toBe(100);
      expect(grpcMessage(err)).toContain(answer.msg);
      expect(answer.msg).toContain(name === "foreign" ? FOREIGN_IP : CLUSTER_IP);
      expect(await tracesOf(id), name).toEqual(nothingLeft);
    }
    const sandboxes = await ctd.cri.listPodSandbox({ "pmh-run": topo.prefix });
    expect(sandboxes.map((s) => s.metadata.name).sort()).toEqual([...started.keys()].sort());
  });

  it("8: status --json --network shows this network's mappings as containerd's cache owns them", async () => {
    const r = await h.operator(["status", "--json", "--network", network]);
    expect(r.code, r.stderr).toBe(0);
    const rows = (
      JSON.parse(r.stdout) as {
        mappings: Array<{ pod: string; network: string; hostPort: number; destinations: string[]; state: string }>;
      }
    ).mappings;
    const row = (name: ShapeName) => rows.find((m) => m.pod === `${K8S_NAMESPACE}/${name}`);
    expect(row("annotated")).toMatchObject({ network, hostPort: 8080, destinations: [NODE_IP2], state: "scoped" });
    // Policy "node": the node's addresses on its default-route interface, and localhost (as portmap allows it).
    expect(row("node")).toMatchObject({ hostPort: 8081, state: "scoped" });
    expect([...row("node")!.destinations].sort()).toEqual(["127.0.0.1", NODE_IP1, NODE_IP2]);
    expect(row("udp")).toMatchObject({ hostPort: 8053, state: "scoped" });
    expect(row("cri-host-ip")).toMatchObject({ hostPort: 8082, destinations: [NODE_IP2], state: "scoped" });
    expect(rows.every((m) => m.network === network)).toBe(true);
    const other = await h.operator(["status", "--json", "--network", `${network}-other`]);
    expect(other.code, other.stderr).toBe(0);
    expect((JSON.parse(other.stdout) as { mappings: unknown[] }).mappings).toEqual([]);
  });

  it("8: reconcile --network rebuilds the rules after a nat flush, from containerd's cache", async () => {
    const before = await nat();
    await nsRunOk(topo.node, "iptables", ["-t", "nat", "-F"]);
    expect(await whoAnswers(topo.client, "tcp", NODE_IP2, 8080, { attempts: 1 })).toBeNull();
    const elsewhere = await h.operator(["reconcile", "--network", `${network}-other`]);
    expect(elsewhere.code, elsewhere.stdout + elsewhere.stderr).toBe(0);
    expect((await nat()).filter((l) => l.startsWith("-A "))).toEqual([]);
    const r = await h.operator(["reconcile", "--network", network]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    // The same rules (pods ADDed in parallel leave portmap's shared rules duplicated: its -C/-A races).
    const unique = (lines: string[]) => [...new Set(lines)].sort();
    expect(unique(await nat())).toEqual(unique(before));
    expect(await whoAnswers(topo.client, "tcp", NODE_IP2, 8080)).toBe("pod-annotated");
    expect(await whoAnswers(topo.client, "tcp", NODE_IP1, 8080)).toBeNull();
    expect(await whoAnswers(topo.client, "tcp", CLUSTER_IP, 8080)).toBe("service");
    expect(await whoAnswers(topo.client, "udp", NODE_IP1, 8053)).toBe("pod-udp");
  });

  it("8: gc --network deletes the chain of a pod containerd's cache no longer has, and nothing else", async () => {
    const lost = started.get("cri-host-ip")!;
    const file = `${network}-${lost.id}-eth0`;
    expect(ctd.cacheFiles()).toContain(file);
    rmSync(join(LIBCNI_CACHE_DIR, "results", file));
    // Lost long ago: no record of an ADD that may still be running protects it.
    rmSync(recordPath(DEFAULT_STATE_DIR, network, lost.id), { force: true });
    const r = await h.operator(["gc", "--network", network, "--grace", "0"]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`IPv4: deleted ${chainOf("cri-host-ip")} (network ${network}, container ${lost.id})`);
    expect(r.stdout.match(/deleted/g)).toHaveLength(1);
    expect((await nat()).filter((l) => l.includes(chainOf("cri-host-ip")))).toEqual([]);
    expect(await whoAnswers(topo.client, "tcp", NODE_IP2, 8080)).toBe("pod-annotated");
  });

  it("7: containerd restarted while pods run: their hostPorts keep answering", async () => {
    await ctd.stopDaemon();
    expect(await whoAnswers(topo.client, "tcp", NODE_IP2, 8080)).toBe("pod-annotated");
    await ctd.restart();
    expect(await whoAnswers(topo.client, "tcp", NODE_IP2, 8080)).toBe("pod-annotated");
    expect(await whoAnswers(topo.client, "udp", NODE_IP1, 8053)).toBe("pod-udp");
    const ready = await ctd.cri.listPodSandbox({ "pmh-run": topo.prefix });
    expect(
      ready
        .filter((s) => s.state === "SANDBOX_READY")
        .map((s) => s.metadata.name)
        .sort(),
    ).toEqual([...started.keys()].sort());
  });

  it("6 and 7: Stop + Remove after the restart leave no chain, no jump, no cache entry, and release the IP", async () => {
    for (const [name, s] of started) {
      await topo.removePod(s.pod);
      await ctd.cri.stopPodSandbox(s.id);
      await ctd.cri.removePodSandbox(s.id);
      expect(await tracesOf(s.id), name).toEqual(nothingLeft);
    }
    started.clear();
    expect(ctd.cacheFiles()).toEqual([]);
    expect((await nat()).filter((l) => l.startsWith("-A CNI-HOSTPORT-DNAT"))).toEqual([]);
    expect(await whoAnswers(topo.client, "tcp", NODE_IP2, 8080, { attempts: 1 })).toBeNull();
  });

  it("sent the plugin what test/fixtures/containerd records: the same calls, codes and keys per pod shape", () => {
    const calls = ctd.calls();
    for (const shape of fixtureShapes()) {
      const live = shapeCalls(calls, shape.id).map((c) => normaliseCall(c, shape, runInfo()));
      expect(callShapes(live), shape.name).toEqual(callShapes(readFixture(shape.name).calls));
    }
  });
});
