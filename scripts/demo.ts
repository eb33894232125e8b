// `npm run demo` (via scripts/demo): portmap's hostPort hijacking a Service's ClusterIP, and portmap-hostip
// scoping the same hostPort, each in its own throwaway node/client/pod namespaces with the real CNI plugins; what
// `portmap-hostip status` says on each node; then the user's next step.
import {
  bridgeConflist,
  CLUSTER_IP,
  chainRules,
  containerdMapping,
  createHarness,
  describeRun,
  dnChainName,
  HOST_IP_ANNOTATION,
  IPVS_DEVICE,
  NODE_IP1,
  NODE_IP2,
  type PluginConf,
  stateDirFor,
  type Topology,
  whoAnswers,
} from "../test/support/harness.js";

const HOST_PORT = 8080;
const CONTAINER_PORT = 80;

interface Scenario {
  title: string;
  column: string;
  hostip: Partial<PluginConf> | false;
  annotation?: string;
  /** Who should answer each probe, in probe order. */
  expect: string[];
}

interface Probe {
  label: string;
  from: (t: Topology) => string;
  host: string;
}

const probes: Probe[] = [
  { label: `client → ${NODE_IP1}:${HOST_PORT}`, from: (t) => t.client, host: NODE_IP1 },
  { label: `client → ${NODE_IP2}:${HOST_PORT}`, from: (t) => t.client, host: NODE_IP2 },
  { label: `node   → 127.0.0.1:${HOST_PORT}`, from: (t) => t.node, host: "127.0.0.1" },
  { label: `client → ${CLUSTER_IP}:${HOST_PORT} (Service)`, from: (t) => t.client, host: CLUSTER_IP },
];

const scenarios: Scenario[] = [
  { title: "portmap alone", column: "portmap alone", hostip: false, expect: ["pod", "pod", "pod", "pod"] },
  {
    title: `portmap + portmap-hostip, pod annotation ${HOST_IP_ANNOTATION}: ${NODE_IP2}`,
    column: `+ annotation ${NODE_IP2}`,
    hostip: { defaultHostIP: "any" },
    annotation: NODE_IP2,
    expect: ["nobody", "pod", "nobody", "service"],
  },
  {
    title: 'portmap + portmap-hostip, defaultHostIP "node" (no annotation)',
    column: '+ default "node"',
    hostip: { defaultHostIP: "node" },
    expect: ["pod", "pod", "pod", "service"],
  },
];

function say(text = ""): void {
  process.stdout.write(`${text}\n`);
}

/** Runs one scenario in fresh namespaces; returns who answered each probe. */
async function runScenario(n: number, s: Scenario): Promise<string[]> {
  const h = await createHarness({ libcniCache: true });
  try {
    say(`[${n}] ${s.title}`);
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: s.hostip });
    say(`    chain: ${list.plugins.map((p) => p.type).join(" → ")}`);
    const { pod, add } = await h.startPod("web", list, {
      portMappings: [containerdMapping(HOST_PORT, CONTAINER_PORT)],
      ...(s.annotation === undefined ? {} : { hostIPAnnotation: s.annotation }),
      serve: { tcp: [CONTAINER_PORT] },
    });
    if (!add.ok) throw new Error(`CNI ADD failed:\n${describeRun(add)}`);
    await h.topo.serveService({ tcp: [HOST_PORT] });

    const chain = dnChainName(list.name, pod.containerID);
    say(`    iptables -t nat -S ${chain}:`);
    for (const rule of (await chainRules(h.topo.node, chain)) ?? []) say(`      ${rule.slice(`-A ${chain} `.length)}`);
    const answers: string[] = [];
    for (const p of probes) {
      const who = await whoAnswers(p.from(h.topo), "tcp", p.host, HOST_PORT);
      answers.push(who === null ? "nobody" : who.startsWith("pod-") ? "pod" : who);
    }
    // The node's libcni cache and the plugin's records are the demo's own directories.
    const status = await h.operator([
      "status",
      "--cache-dir",
      h.cacheDir as string,
      "--state-dir",
      stateDirFor(h.topo.ipamDataDir),
    ]);
    if (status.code !== 0) throw new Error(`portmap-hostip status failed:\n${status.stderr}`);
    say("    portmap-hostip status:");
    for (const line of status.stdout.trimEnd().split("\n")) say(`      ${line}`);
    say();
    return answers;
  } finally {
    await h.destroy();
  }
}

function row(cells: string[], widths: number[]): string {
  return cells
    .map((c, i) => c.padEnd(widths[i]!))
    .join("  ")
    .trimEnd();
}

async function main(): Promise<number> {
  say("portmap-hostip demo — every scenario gets its own node, client and pod network namespaces");
  say(`  node:    uplink ${NODE_IP1} + ${NODE_IP2}, ${IPVS_DEVICE} ${CLUSTER_IP} (ClusterIP, like kube-proxy IPVS)`);
  say(`  Service: a listener on ${CLUSTER_IP}:${HOST_PORT} in the node answers "service"`);
  say(`  pod:     hostPort ${HOST_PORT} → containerPort ${CONTAINER_PORT}, answers "pod" (runtime sends no hostIP)`);
  say();

  const results: string[][] = [];
  for (const [i, s] of scenarios.entries()) results.push(await runScenario(i + 1, s));

  const header = ["who answers", ...scenarios.map((s) => s.column)];
  const body = probes.map((p, i) => [
    p.label,
    ...results.map((r, j) => {
      const got = r[i]!;
      const hijack = got === "pod" && p.host === CLUSTER_IP ? " (hijacked!)" : "";
      return got + hijack + (got === scenarios[j]!.expect[i] ? "" : " UNEXPECTED");
    }),
  ]);
  const widths = header.map((_, c) => Math.max(...[header, ...body].map((r) => r[c]!.length)));
  say(row(header, widths));
  say(
    row(
      widths.map((w) => "-".repeat(w)),
      widths,
    ),
  );
  for (const r of body) say(row(r, widths));
  say();

  const bad = body.some((r) => r.some((c) => c.endsWith("UNEXPECTED")));
  if (bad) {
    say("FAILED: some destination was not answered as expected (see UNEXPECTED above).");
    return 1;
  }
  say(
    "portmap alone answers on every local address and steals the Service's port; with portmap-hostip the hostPort answers only where it should.",
  );
  say();
  say("Next, on a node of yours (containerd, a conflist with portmap), as root, from this clone:");
  say("  install -m 0755 dist/portmap-hostip-linux-x64 /usr/local/bin/portmap-hostip");
  say("  portmap-hostip status                           # who takes which hostPort there, as above; changes nothing");
  say("  portmap-hostip install --default-host-ip node   # the entry after portmap: pods that start now are scoped");
  say("Then its keeper (README.md, Quick start on one node); on a cluster, the DaemonSet (docs/install.md).");
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
