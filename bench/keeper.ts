// `npm run bench:keeper`: what the keeper's resync costs when nothing changed, at 1,000 cached pods, for
// iptables-nft and iptables-legacy. In a throwaway node namespace: 1,000 libcni cache entries (bridge →
// portmap → portmap-hostip, hostPorts 20000+i/tcp and 30000+i/udp, pod IPs in 10.244.0.0/16, "added"
// records as ADD leaves them), one pass that builds every chain (as after a flush), then timed passes of the
// keeper's backends that find everything correct (the nat table read, and portmap's nftables chains, absent
// here): wall time, this process's CPU time and its children's (iptables -S, nft, ip; from /proc/self/stat,
// 10 ms ticks), and the CPU time of the status rows a keeper with --metrics-address or Events computes from each
// pass where the node changed (a keeper reuses them while nothing did). Writes bench/keeper-results.json.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { nodeBackends } from "../src/backends/registry.js";
import { writeRecord } from "../src/host/record.js";
import { run } from "../src/host/run.js";
import { keeperPass, newMemory } from "../src/ops/pass.js";
import { status } from "../src/ops/status.js";
import { bridgeConflist } from "../test/support/conflists.js";
import { REPO_ROOT } from "../test/support/harness.js";
import { legacyIptablesPath } from "../test/support/iptables.js";
import { cacheEntryJson } from "../test/support/result-cache.js";
import { createTopology } from "../test/support/topology.js";

const PODS = Number(process.env["BENCH_KEEPER_PODS"] ?? 1000);
const ROUNDS = Number(process.env["BENCH_KEEPER_ROUNDS"] ?? 10);

interface Timing {
  pods: number;
  chains: number;
  firstPassMs: number;
  /** Per no-change pass. */
  wallMs: number[];
  cpuMs: number[];
  childCpuMs: number[];
  /** The status rows from what the pass read (metrics, Events). */
  statusCpuMs: number[];
  /** The building pass's transactions alone, applied after a flush as iptables-restore applies them: its floor. */
  restoreMs: number;
  /** The keeper itself (the single executable, `install --watch --resync 1`) over RUNNING_S: CPU per resync. */
  keeper: { resyncs: number; cpuMsPerResync: number } | undefined;
}

const SEA = join(REPO_ROOT, "dist/portmap-hostip-linux-x64");
const RUNNING_S = Number(process.env["BENCH_KEEPER_RUNNING_S"] ?? 60);

/** utime + stime + cutime + cstime of a process, in ms (10 ms ticks). */
function processCpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return ([11, 12, 13, 14].reduce((n, i) => n + Number(fields[i]), 0) * 1000) / 100;
}

/**
 * The real keeper on the node the passes built, resyncing every second: what it spends per resync once settled,
 * itself and the tools it waits for (the monitors it keeps running are idle here).
 */
async function runningKeeper(cacheDir: string, stateDir: string, dir: string): Promise<Timing["keeper"]> {
  if (!existsSync(SEA)) return undefined;
  const conf = join(dir, "net.d");
  const bin = join(dir, "bin");
  mkdirSync(conf, { recursive: true });
  mkdirSync(bin, { recursive: true });
  writeFileSync(
    join(conf, "10-bench.conflist"),
    `${JSON.stringify(bridgeConflist({ dataDir: dir, hostip: { stateDir } }))}\n`,
  );
  const args = ["install", "--watch", "--cni-conf-dir", conf, "--cni-bin-dir", bin, "--cache-dir", cacheDir];
  const keeper = spawn(SEA, [...args, "--state-dir", stateDir, "--resync", "1"], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  keeper.stdout.on("data", (b: Buffer) => {
    out += b.toString();
  });
  keeper.stderr.on("data", () => {});
  try {
    // Settled: the start's passes done, the next ones find everything correct.
    await new Promise((r) => setTimeout(r, 10_000));
    const cpu = processCpuMs(keeper.pid as number);
    const lines = out.length;
    await new Promise((r) => setTimeout(r, RUNNING_S * 1000));
    const spent = processCpuMs(keeper.pid as number) - cpu;
    if (out.slice(lines).includes("keeper ("))
      throw new Error(`the keeper changed rules while settled:\n${out.slice(lines)}`);
    return { resyncs: RUNNING_S, cpuMsPerResync: spent / RUNNING_S };
  } finally {
    keeper.kill("SIGTERM");
    await new Promise((r) => keeper.once("exit", r));
  }
}

/** CPU time of the children this process waited for (cutime + cstime), in ms. */
function childrenCpuMs(): number {
  const fields = readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ");
  // After "pid (comm) ": field 3 is state; cutime and cstime are fields 16 and 17.
  return ((Number(fields[13]) + Number(fields[14])) * 1000) / 100;
}

async function runOk(tool: string, args: string[], input?: string): Promise<void> {
  const r = await run(tool, args, { input, timeoutMs: 600_000 });
  if (r.code !== 0) throw new Error(`${tool} ${args.join(" ")}: ${r.stderr}`);
}

/** Inside the node namespace: build, then time passes that change nothing. */
async function inner(cacheDir: string, stateDir: string): Promise<void> {
  // The keeper's backends: no pod here uses portmap's nftables backend (its survey finds no table), so
  // nothing runs portmap.
  const options = {
    dryRun: false,
    rebuild: true,
    conflictsFirst: true,
    networks: [],
    scope: "ours" as const,
    managed: undefined,
    graceMs: Infinity,
    cniBinDir: "/opt/cni/bin",
    cniIptables: undefined,
  };
  const memory = newMemory();
  const dirs = { cacheDir, stateDir };
  const backends = await nodeBackends();
  const t0 = process.hrtime.bigint();
  const first = await keeperPass(backends, dirs, memory, options);
  const firstPassMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const failures = first.families.flatMap((f) => (f.failure ? [f.failure] : []));
  if (failures.length > 0 || first.problems.length > 0)
    throw new Error(`the building pass failed: ${[...failures, ...first.problems].join("; ")}`);
  // The building pass's transactions, timed alone on a flushed table (which they build again).
  let restoreMs = 0;
  for (const f of first.families.filter((x) => x.lines > 0 && x.family !== undefined)) {
    const tool = f.family === 6 ? f.backend.replace(/^iptables/, "ip6tables") : f.backend;
    for (const flag of ["-F", "-X"]) await runOk(tool, ["-t", "nat", flag]);
    const t = process.hrtime.bigint();
    await runOk(`${tool}-restore`, ["--noflush"], f.payload);
    restoreMs += Number(process.hrtime.bigint() - t) / 1e6;
  }
  const timing: Timing = {
    restoreMs,
    pods: PODS,
    chains: first.families.reduce((n, f) => n + f.rebuilt, 0),
    firstPassMs,
    wallMs: [],
    cpuMs: [],
    childCpuMs: [],
    statusCpuMs: [],
    keeper: undefined,
  };
  for (let i = 0; i < ROUNDS; i++) {
    const cpu = process.cpuUsage();
    const children = childrenCpuMs();
    const t = process.hrtime.bigint();
    const report = await keeperPass(backends, dirs, memory, options);
    timing.wallMs.push(Number(process.hrtime.bigint() - t) / 1e6);
    const used = process.cpuUsage(cpu);
    timing.cpuMs.push((used.user + used.system) / 1000);
    timing.childCpuMs.push(childrenCpuMs() - children);
    if (report.families.some((f) => f.lines > 0)) throw new Error("a pass over correct chains wrote something");
    const seen = report.seen!;
    const before = process.cpuUsage();
    const rows = status(seen.rules, seen.view.cache, seen.view.network, seen.verdict);
    const spent = process.cpuUsage(before);
    timing.statusCpuMs.push((spent.user + spent.system) / 1000);
    if (rows.length !== 2 * PODS) throw new Error(`status found ${rows.length} mappings, not ${2 * PODS}`);
  }
  timing.keeper = await runningKeeper(cacheDir, stateDir, dirname(stateDir));
  process.stdout.write(JSON.stringify(timing));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function main(): Promise<void> {
  if (process.argv[2] === "--inner") return inner(process.argv[3] as string, process.argv[4] as string);
  const results: Record<
    string,
    Timing & { medianWallMs: number; medianCpuMs: number; medianChildCpuMs: number; medianStatusCpuMs: number }
  > = {};
  for (const variant of ["nft", "legacy"] as const) {
    const topo = await createTopology();
    try {
      const cacheDir = join(topo.tmpDir, "cni");
      const stateDir = join(topo.tmpDir, "state");
      mkdirSync(join(cacheDir, "results"), { recursive: true });
      const list = bridgeConflist({ dataDir: topo.ipamDataDir, hostip: { stateDir } });
      for (let i = 0; i < PODS; i++) {
        const containerID = `bench${String(i).padStart(4, "0")}`;
        const ip = `10.244.${2 + Math.floor(i / 250)}.${2 + (i % 250)}`;
        const entry = {
          list,
          containerID,
          ifName: "eth0",
          args: `K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p${i}`,
          capabilityArgs: {
            portMappings: [
              { HostPort: 20000 + i, ContainerPort: 80, Protocol: "tcp", HostIP: "" },
              { HostPort: 30000 + i, ContainerPort: 53, Protocol: "udp", HostIP: "" },
            ],
            "io.kubernetes.cri.pod-annotations": {},
          },
          result: {
            cniVersion: "1.0.0",
            interfaces: [{ name: "eth0", sandbox: "/x" }],
            ips: [{ address: `${ip}/16`, interface: 0 }],
          },
        };
        writeFileSync(join(cacheDir, "results", `${list.name}-${containerID}-eth0`), cacheEntryJson(entry));
        writeRecord(stateDir, list.name, containerID, "added", variant);
      }
      const path = variant === "legacy" ? legacyIptablesPath(topo.tmpDir) : (process.env["PATH"] ?? "");
      const r = await run(
        "ip",
        [
          "netns",
          "exec",
          topo.node,
          process.execPath,
          ...(process.env["BENCH_KEEPER_PROF"]
            ? ["--cpu-prof", "--cpu-prof-dir", process.env["BENCH_KEEPER_PROF"]]
            : []),
          process.argv[1] as string,
          "--inner",
          cacheDir,
          stateDir,
        ],
        {
          env: { ...process.env, PATH: path },
          timeoutMs: 600_000,
        },
      );
      if (r.code !== 0) throw new Error(`${variant}: ${r.stderr}`);
      const t = JSON.parse(r.stdout) as Timing;
      results[variant] = {
        ...t,
        medianWallMs: median(t.wallMs),
        medianCpuMs: median(t.cpuMs),
        medianChildCpuMs: median(t.childCpuMs),
        medianStatusCpuMs: median(t.statusCpuMs),
      };
      process.stdout.write(
        `iptables-${variant}: ${t.pods} pods, ${t.chains} chains built in ${Math.round(t.firstPassMs)} ms (its transactions alone: ${Math.round(t.restoreMs)} ms); a pass that changes nothing: median ${median(t.wallMs).toFixed(0)} ms wall, ${median(t.cpuMs).toFixed(0)} ms CPU in the keeper + ${median(t.childCpuMs).toFixed(0)} ms in its children, over ${t.wallMs.length} passes; status rows from it, when the node changed (metrics, Events; else the keeper reuses the last): ${median(t.statusCpuMs).toFixed(0)} ms CPU${t.keeper ? `; the keeper running, resync every second: ${t.keeper.cpuMsPerResync.toFixed(1)} ms CPU per resync over ${t.keeper.resyncs} s (${(t.keeper.cpuMsPerResync / 100).toFixed(2)} % of a core at the default 10 s)` : ""}\n`,
      );
    } finally {
      await topo.destroy();
    }
  }
  writeFileSync("bench/keeper-results.json", `${JSON.stringify(results, null, 2)}\n`);
}

await main();
