// `npm run bench:keeper`: what the keeper's resync costs when nothing changed, at 1,000 cached pods, for
// iptables-nft and iptables-legacy. In a throwaway node namespace: 1,000 libcni cache entries (bridge →
// portmap → portmap-hostip, hostPorts 20000+i/tcp and 30000+i/udp, pod IPs in 10.244.0.0/16, "added"
// records as ADD leaves them), one pass that builds every chain (as after a flush), then timed passes of the
// keeper's backends that find everything correct (the nat table read, and portmap's nftables chains, absent
// here): wall time, this process's CPU time and its children's (iptables -S, nft, ip; from /proc/self/stat,
// 10 ms ticks). Writes bench/keeper-results.json.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { nodeBackends } from "../src/backends/registry.js";
import { writeRecord } from "../src/host/record.js";
import { run } from "../src/host/run.js";
import { keeperPass, newMemory } from "../src/ops/pass.js";
import { bridgeConflist } from "../test/support/conflists.js";
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
}

/** CPU time of the children this process waited for (cutime + cstime), in ms. */
function childrenCpuMs(): number {
  const fields = readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ");
  // After "pid (comm) ": field 3 is state; cutime and cstime are fields 16 and 17.
  return ((Number(fields[13]) + Number(fields[14])) * 1000) / 100;
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
    fallbackEntry: undefined,
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
  const timing: Timing = {
    pods: PODS,
    chains: first.families.reduce((n, f) => n + f.rebuilt, 0),
    firstPassMs,
    wallMs: [],
    cpuMs: [],
    childCpuMs: [],
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
  }
  process.stdout.write(JSON.stringify(timing));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function main(): Promise<void> {
  if (process.argv[2] === "--inner") return inner(process.argv[3] as string, process.argv[4] as string);
  const results: Record<string, Timing & { medianWallMs: number; medianCpuMs: number; medianChildCpuMs: number }> = {};
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
      };
      process.stdout.write(
        `iptables-${variant}: ${t.pods} pods, ${t.chains} chains built in ${Math.round(t.firstPassMs)} ms; a pass that changes nothing: median ${median(t.wallMs).toFixed(0)} ms wall, ${median(t.cpuMs).toFixed(0)} ms CPU in the keeper + ${median(t.childCpuMs).toFixed(0)} ms in its children, over ${t.wallMs.length} passes\n`,
      );
    } finally {
      await topo.destroy();
    }
  }
  writeFileSync("bench/keeper-results.json", `${JSON.stringify(results, null, 2)}\n`);
}

await main();
