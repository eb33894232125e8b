// What the bench prints and writes: the tables (also as bench/results.md), the targets checked on this run's
// ratios, the machine, and a hand-written SVG chart of ADD latency against table size.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { cpus, loadavg, release, totalmem } from "node:os";
import { M } from "./names.js";
import type { Variant } from "./setup.js";
import { median, type Stats } from "./stats.js";

export interface Artifact {
  name: string;
  /** Where the build put it. */
  built: string;
  /** The copy that runs (made as the installer makes it). */
  path: string;
  /** Measurement names of its ADD (the tcp + udp pod), its ADD of a pod without hostPort, of a dual-stack pod, and VERSION. */
  add: string;
  noPorts: string;
  dual: string;
  version: string;
  /** The floor it is held against: `-e 0` of the Node it runs on. */
  floor: string;
}

export interface ConfigResult {
  variant: Variant;
  /** Unrelated (kube-proxy-like) rules in the nat table. */
  size: number;
  /** Other pods' hostPort chains present. */
  others: number;
  /** Every `-A` rule in the nat table when the configuration started (portmap's own chains included). */
  natRules: number;
  /** Milliseconds, in the order measured. */
  samples: Record<string, number[]>;
  stats: Record<string, Stats>;
}

export interface ConcurrentResult {
  variant: Variant;
  size: number;
  others: number;
  artifact: string;
  pods: number;
  wallMs: number[];
  stats?: Stats;
  allSucceeded: boolean;
  chainsCorrect: boolean;
  failures: string[];
}

export interface RssResult {
  variant: Variant;
  size: number;
  others: number;
  name: string;
  kib: number[];
  maxKiB: number;
  /** User + system CPU time of each run (GNU time, 10 ms resolution). */
  cpuMs: number[];
}

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  node24: string;
  portmap: string;
  iptables: Partial<Record<Variant, string>>;
  date: string;
  /** 1-minute load average at the start and at the end of the run (other work on the machine skews timings). */
  loadAverage: number[];
}

export interface BenchResults {
  machine: Machine;
  settings: Record<string, unknown>;
  artifacts: { name: string; path: string }[];
  configs: ConfigResult[];
  concurrent: ConcurrentResult[];
  rss: RssResult[];
  targets?: Target[];
  durationSeconds?: number;
}

export interface Target {
  target: string;
  measured: string;
  met: boolean;
}

function quiet(file: string, args: string[]): string {
  try {
    return execFileSync(file, args, {
      encoding: "utf8",
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" },
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    return "unknown";
  }
}

/** The machine, and the versions of what runs (`node` as found on the timed processes' PATH). */
export function machineInfo(node24: string): Machine {
  const cpuinfo = existsSync("/proc/cpuinfo") ? readFileSync("/proc/cpuinfo", "utf8") : "";
  return {
    cpu: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: quiet("node", ["--version"]),
    node24: existsSync(node24) ? quiet(node24, ["--version"]) : "absent",
    portmap: `containernetworking-plugins ${quiet("dpkg-query", ["-W", "-f", "${Version}", "containernetworking-plugins"])}`,
    iptables: {},
    date: new Date().toISOString(),
    loadAverage: [loadavg()[0]!],
  };
}

const ms = (v: number | undefined): string =>
  v === undefined || Number.isNaN(v) ? "–" : v >= 100 ? v.toFixed(0) : v.toFixed(1);
const ratio = (a: number | undefined, b: number | undefined): string =>
  a === undefined || b === undefined ? "–" : (a / b).toFixed(a / b < 0.1 ? 3 : 2);
const mib = (kib: number): string => (kib / 1024).toFixed(1);

function table(header: string[], rows: string[][]): string {
  const lines = [header, header.map(() => "---"), ...rows];
  return lines.map((cells) => `| ${cells.join(" | ")} |`).join("\n");
}

function find(results: BenchResults, variant: Variant, size: number, others: number): ConfigResult | undefined {
  return results.configs.find((c) => c.variant === variant && c.size === size && c.others === others);
}

function targets(results: BenchResults, artifacts: Artifact[]): Target[] {
  const out: Target[] = [];
  const shipped = artifacts.find((a) => a.name === "SEA") ?? artifacts[0]!;
  const sizes = [...new Set(results.configs.map((c) => c.size))];
  const largest = Math.max(...sizes);
  const variants = [...new Set(results.configs.map((c) => c.variant))];
  for (const v of variants) {
    const empty = find(results, v, 0, 0);
    if (empty) {
      const floor = empty.stats[M.floor]?.median;
      const limits: [Artifact, number][] = [[shipped, 1.6]];
      const bundle = artifacts.find((a) => a.name === "bundle");
      if (bundle && bundle !== shipped) limits.push([bundle, 2]);
      else if (bundle) limits[0] = [bundle, 1.6];
      for (const [a, limit] of limits) {
        const add = empty.stats[a.add]?.median;
        if (add !== undefined && floor !== undefined) {
          out.push({
            target: `${v}, empty table: ${a.name} ADD ≤ ${limit} × node -e 0`,
            measured: `${ms(add)} ms / ${ms(floor)} ms = ${ratio(add, floor)}`,
            met: add / floor <= limit,
          });
        }
      }
      if (shipped.name === "SEA") {
        const add = empty.stats[shipped.add]?.median;
        const floor24 = empty.stats[M.floor24]?.median;
        if (add !== undefined && floor24 !== undefined) {
          out.push({
            target: `(info) ${v}, empty table: SEA ADD against its own runtime's floor (node24 -e 0)`,
            measured: `${ms(add)} ms / ${ms(floor24)} ms = ${ratio(add, floor24)}`,
            met: true,
          });
        }
      }
    }
    for (const others of [0, results.settings["otherPods"] as number]) {
      const big = find(results, v, largest, others);
      if (!big) continue;
      for (const a of artifacts) {
        const add = big.stats[a.add]?.median;
        const pm = big.stats[M.portmapAdd]?.median;
        if (add !== undefined && pm !== undefined) {
          out.push({
            target: `${v}, ${largest} rules, ${others} other pods: ${a.name} ADD ≤ 0.05 × portmap ADD`,
            measured: `${ms(add)} ms / ${ms(pm)} ms = ${ratio(add, pm)}`,
            met: add / pm <= 0.05,
          });
        }
      }
    }
    for (const size of sizes) {
      const without = find(results, v, size, 0);
      const withOthers = find(results, v, size, results.settings["otherPods"] as number);
      if (!without || !withOthers) continue;
      for (const a of artifacts) {
        const x = without.stats[a.add]?.median;
        const y = withOthers.stats[a.add]?.median;
        if (x !== undefined && y !== undefined) {
          out.push({
            target: `${v}, ${size} rules: ${a.name} ADD does not grow with ${withOthers.others} other pods' chains (≤ 1.10 ×)`,
            measured: `${ms(y)} ms vs ${ms(x)} ms = ${ratio(y, x)}`,
            met: y / x <= 1.1,
          });
        }
      }
    }
  }
  out.push(...startTargets(results, artifacts));
  for (const a of artifacts) {
    const runs = results.rss.filter((r) => r.name === a.add);
    if (runs.length > 0) {
      const peak = Math.max(...runs.map((r) => r.maxKiB));
      out.push({
        target: `peak RSS of one ${a.name} ADD ≤ 60 MiB`,
        measured: `${mib(peak)} MiB (largest of ${runs.reduce((n, r) => n + r.kib.length, 0)} runs)`,
        met: peak <= 60 * 1024,
      });
    }
  }
  for (const c of results.concurrent.filter(
    (x) => !([M.floor, M.listChain, M.restoreChain] as string[]).includes(x.artifact),
  )) {
    out.push({
      target: `${c.variant}, ${c.size} rules: ${c.pods} concurrent ${c.artifact} ADDs all succeed, every chain correct`,
      measured: `${c.allSucceeded ? "all exit 0" : "failures"}, ${c.chainsCorrect ? "chains correct" : "chains wrong"}; wall ${ms(c.stats?.median)} ms median`,
      met: c.allSucceeded && c.chainsCorrect,
    });
  }
  return out;
}

/**
 * The floor of an ADD at a table size: Node's start plus one read and one write of the pod's chain, run bare. A
 * container's first ADD, the one measured, makes the write only.
 */
function processFloor(c: ConfigResult, floor: string): number | undefined {
  const parts = [c.stats[floor]?.median, c.stats[M.listChain]?.median, c.stats[M.restoreChain]?.median];
  return parts.every((p) => p !== undefined) ? (parts as number[]).reduce((a, b) => a + b, 0) : undefined;
}

/**
 * Every pod start pays almost nothing above what it must: the single executable's ADD against the least a Node
 * plugin can do for the same pod (bench/least-add.cjs, on the same runtime), and a pod without hostPorts
 * against its runtime's `-e 0`. The bundle's, against its own runtime, for information.
 */
function startTargets(results: BenchResults, artifacts: Artifact[]): Target[] {
  const out: Target[] = [];
  const sizes = [...new Set(results.configs.map((c) => c.size))];
  const checked = [0, Math.max(...sizes)];
  const sea = artifacts.find((a) => a.name === "SEA");
  for (const v of [...new Set(results.configs.map((c) => c.variant))]) {
    const empty = find(results, v, 0, 0);
    for (const a of artifacts) {
      const floor = empty?.stats[a.floor]?.median;
      const add = empty?.stats[a.noPorts]?.median;
      if (add === undefined || floor === undefined) continue;
      out.push({
        target: `${a === sea ? "" : "(info) "}${v}, empty table: ${a.name} ADD, a pod without hostPort ≤ 1.10 × ${a.floor}`,
        measured: `${ms(add)} ms / ${ms(floor)} ms = ${ratio(add, floor)}`,
        met: a !== sea || add / floor <= 1.1,
      });
    }
    if (!sea) continue;
    for (const size of checked) {
      const config = find(results, v, size, 0);
      for (const [least, what, ours] of [
        [M.leastAdd, "tcp + udp hostPort", sea.add],
        [M.leastAddDual, "the same pod dual-stack", sea.dual],
      ] as const) {
        const l = config?.stats[least]?.median;
        const add = config?.stats[ours]?.median;
        if (l === undefined || add === undefined) continue;
        out.push({
          target: `${v}, ${size} rules: SEA ADD, ${what} ≤ 1.10 × the least Node ADD`,
          measured: `${ms(add)} ms / ${ms(l)} ms = ${ratio(add, l)}`,
          met: add / l <= 1.1,
        });
      }
    }
    const largest = Math.max(...sizes);
    for (const others of [0, results.settings["otherPods"] as number]) {
      const big = find(results, v, largest, others);
      if (!big) continue;
      for (const a of artifacts) {
        const add = big.stats[a.add]?.median;
        const floor = processFloor(big, a.floor);
        if (add === undefined || floor === undefined) continue;
        out.push({
          target: `(info) ${v}, ${largest} rules, ${others} other pods: ${a.name} ADD against the floor (${a.floor} + iptables -S + iptables-restore, run bare)`,
          measured: `${ms(add)} ms / ${ms(floor)} ms = ${ratio(add, floor)}`,
          met: true,
        });
      }
    }
  }
  return out;
}

/** Prints the tables and targets; returns them as markdown (bench/results.md). */
export function printReport(results: BenchResults, artifacts: Artifact[]): string {
  const m = results.machine;
  const rounds = results.settings["rounds"] as number;
  const parts: string[] = [];
  parts.push(
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Linux ${m.kernel}; node ${m.node} (bundle), ${m.node24} (SEA); ${m.portmap}; ` +
      `${Object.entries(m.iptables)
        .map(([v, s]) => `${v}: ${s}`)
        .join(
          ", ",
        )}; ${m.date}; load average ${m.loadAverage.map((l) => l.toFixed(1)).join(" → ")}. Median of ${rounds} interleaved rounds, ms.`,
  );

  const main: string[][] = [];
  const mainNames = [
    M.floor,
    M.floor24,
    M.portmapAdd,
    ...artifacts.map((a) => a.add),
    M.leastAdd,
    M.portmapAddDual,
    ...artifacts.map((a) => a.dual),
    M.leastAddDual,
    ...artifacts.map((a) => a.noPorts),
  ];
  // Each of our rows against the `-e 0` of the Node it runs on (the SEA's own Node 24, as the least Node ADD);
  // portmap's against the dual-stack one's.
  const floorOf = (name: string): string =>
    name === M.leastAdd || name === M.leastAddDual
      ? M.floor24
      : (artifacts.find((a) => [a.add, a.noPorts, a.dual].includes(name))?.floor ?? M.floor);
  const portmapOf = (name: string): string =>
    artifacts.some((a) => a.dual === name) || name === M.portmapAddDual || name === M.leastAddDual
      ? M.portmapAddDual
      : M.portmapAdd;
  for (const c of results.configs) {
    for (const name of mainNames) {
      const s = c.stats[name];
      if (!s) continue;
      const pm = artifacts.some((a) => a.noPorts === name) ? undefined : c.stats[portmapOf(name)]?.median;
      main.push([
        c.variant,
        String(c.size),
        String(c.others),
        name,
        ms(s.median),
        ms(s.min),
        ms(s.max),
        ratio(s.median, pm),
        ratio(s.median, c.stats[floorOf(name)]?.median),
      ]);
    }
  }
  parts.push(
    'ADD of the pod with a tcp and a udp hostPort (policy "node"), of the same pod dual-stack, and of a pod without hostPort; ' +
      "× portmap ADD: against portmap's ADD of the same pod; × its node -e 0: the bundle against the system's node, the SEA against its own runtime (node24).",
  );
  parts.push(
    table(
      [
        "iptables",
        "unrelated rules",
        "other pods",
        "process",
        "median",
        "min",
        "max",
        "× portmap ADD",
        "× its node -e 0",
      ],
      main,
    ),
  );

  const componentNames = [
    ...artifacts.map((a) => a.version),
    M.listChain,
    M.restoreChain,
    M.ipAddr,
    M.nftList,
    M.portmapDel,
  ];
  parts.push(
    "Where the time goes (medians, ms): our VERSION is Node start + loading the whole bundle with no iptables call; " +
      "`iptables -S <chain>` is what an ADD after the container's first (and CHECK) runs to read the pod's chain (the first ADD reads none: its one transaction deletes portmap's rules as it knows them), `iptables-restore <chain>` what writes it.",
  );
  parts.push(
    table(
      ["iptables", "unrelated rules", "other pods", ...componentNames],
      results.configs.map((c) => [
        c.variant,
        String(c.size),
        String(c.others),
        ...componentNames.map((n) => ms(c.stats[n]?.median)),
      ]),
    ),
  );

  if (results.concurrent.length > 0) {
    parts.push(
      `Concurrent ADDs (wall time from the first start to the last exit, ms; "${M.floor}" is as many Node starts at once, nothing else; ` +
        `"${M.listChain}" and "${M.restoreChain}" as many of that one call, each on its own pod's chain):`,
    );
    parts.push(
      table(
        [
          "iptables",
          "unrelated rules",
          "other pods",
          "processes",
          "count",
          "median",
          "min",
          "max",
          `× ${M.floor} at once`,
          "all exit 0",
          "chains correct",
        ],
        results.concurrent.map((c) => {
          const floor = results.concurrent.find(
            (f) => f.artifact === M.floor && f.variant === c.variant && f.size === c.size && f.others === c.others,
          );
          const checked = !([M.floor, M.listChain, M.restoreChain] as string[]).includes(c.artifact);
          return [
            c.variant,
            String(c.size),
            String(c.others),
            c.artifact,
            String(c.pods),
            ms(c.stats?.median),
            ms(c.stats?.min),
            ms(c.stats?.max),
            ratio(c.stats?.median, floor?.stats?.median),
            c.allSucceeded ? "yes" : "NO",
            checked ? (c.chainsCorrect ? "yes" : "NO") : "–",
          ];
        }),
      ),
    );
  }
  if (results.rss.length > 0) {
    parts.push(
      "Peak RSS (GNU time %M: the largest of the process and the children it waited for, MiB) and CPU time (user + system of that tree, ms, 10 ms resolution):",
    );
    parts.push(
      table(
        ["iptables", "unrelated rules", "other pods", "process", "peak RSS max", "RSS runs", "CPU median", "CPU runs"],
        results.rss.map((r) => [
          r.variant,
          String(r.size),
          String(r.others),
          r.name,
          mib(r.maxKiB),
          r.kib.map(mib).join(" "),
          ms(median(r.cpuMs)),
          r.cpuMs.join(" "),
        ]),
      ),
    );
  }
  results.targets = targets(results, artifacts);
  parts.push("Targets, ratios of medians from this run:");
  parts.push(
    table(
      ["target", "measured", "met"],
      results.targets.map((t) => [t.target, t.measured, t.met ? "yes" : "**no**"]),
    ),
  );
  const text = `${parts.join("\n\n")}\n`;
  process.stdout.write(text);
  return text;
}

// ---- chart ----

const COLORS: Record<string, string> = {
  [M.portmapAdd]: "#d62728",
  [M.bundleAdd]: "#1f77b4",
  [M.seaAdd]: "#2ca02c",
  [M.floor]: "#7f7f7f",
};

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** ADD latency (median) against the number of unrelated nat rules; log-scale y; one line per process and variant. */
export function renderChart(results: BenchResults, artifacts: Artifact[]): string {
  const W = 760;
  const H = 460;
  const pad = { l: 70, r: 230, t: 50, b: 60 };
  const names = [M.portmapAdd, ...artifacts.map((a) => a.add), M.floor];
  const otherPods = results.settings["otherPods"] as number;
  const sizes = [...new Set(results.configs.map((c) => c.size))].sort((a, b) => a - b);
  const values = results.configs.flatMap((c) =>
    names.map((n) => c.stats[n]?.median).filter((v): v is number => v !== undefined && v > 0),
  );
  const lo = 10 ** Math.floor(Math.log10(Math.min(...values)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...values)));
  const maxSize = Math.max(...sizes, 1);
  const x = (size: number): number => pad.l + (size / maxSize) * (W - pad.l - pad.r);
  const y = (v: number): number =>
    pad.t + (1 - (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (H - pad.t - pad.b);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  out.push("<title>CNI ADD latency against nat table size</title>");
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(
    `<text x="${pad.l}" y="22" font-size="15" font-weight="bold">CNI ADD latency against nat table size (median, ms, log scale)</text>`,
  );
  const m = results.machine;
  out.push(
    `<text x="${pad.l}" y="40" fill="#555">${esc(`${m.cpu}, ${m.cores} cores, Linux ${m.kernel}, ${m.date.slice(0, 10)}`)}</text>`,
  );
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    for (const k of [1, 2, 5]) {
      const v = d * k;
      if (v > hi * 1.0001) break;
      const yy = y(v).toFixed(1);
      out.push(`<line x1="${pad.l}" x2="${W - pad.r}" y1="${yy}" y2="${yy}" stroke="${k === 1 ? "#ccc" : "#eee"}"/>`);
      out.push(
        `<text x="${pad.l - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle" fill="#333">${v >= 1000 ? `${v / 1000} s` : `${v} ms`}</text>`,
      );
    }
  }
  for (const s of sizes) {
    out.push(`<line x1="${x(s).toFixed(1)}" x2="${x(s).toFixed(1)}" y1="${pad.t}" y2="${H - pad.b}" stroke="#eee"/>`);
    out.push(
      `<text x="${x(s).toFixed(1)}" y="${H - pad.b + 18}" text-anchor="middle" fill="#333">${s.toLocaleString("en-US")}</text>`,
    );
  }
  out.push(
    `<text x="${(pad.l + W - pad.r) / 2}" y="${H - 18}" text-anchor="middle">unrelated (kube-proxy-like) nat rules</text>`,
  );
  out.push(
    `<rect x="${pad.l}" y="${pad.t}" width="${W - pad.l - pad.r}" height="${H - pad.t - pad.b}" fill="none" stroke="#999"/>`,
  );
  const legend: string[] = [];
  let ly = pad.t + 6;
  for (const variant of [...new Set(results.configs.map((c) => c.variant))]) {
    const dash = variant === "legacy" ? ' stroke-dasharray="6 4"' : "";
    for (const name of names) {
      const color = COLORS[name] ?? "#000";
      const pts = sizes
        .map((s) => [s, find(results, variant, s, 0)?.stats[name]?.median] as const)
        .filter((p): p is readonly [number, number] => p[1] !== undefined);
      if (pts.length === 0) continue;
      out.push(
        `<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${pts.map(([s, v]) => `${x(s).toFixed(1)},${y(v).toFixed(1)}`).join(" ")}"/>`,
      );
      for (const [s, v] of pts)
        out.push(`<circle cx="${x(s).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="${color}"/>`);
      for (const s of sizes) {
        const v = find(results, variant, s, otherPods)?.stats[name]?.median;
        if (v !== undefined)
          out.push(
            `<rect x="${(x(s) - 4).toFixed(1)}" y="${(y(v) - 4).toFixed(1)}" width="8" height="8" fill="none" stroke="${color}"/>`,
          );
      }
      legend.push(
        `<line x1="${W - pad.r + 14}" x2="${W - pad.r + 44}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`,
      );
      legend.push(
        `<text x="${W - pad.r + 50}" y="${ly}" dominant-baseline="middle">${esc(`${name} (${variant})`)}</text>`,
      );
      ly += 18;
    }
  }
  ly += 6;
  legend.push(
    `<circle cx="${W - pad.r + 29}" cy="${ly}" r="3" fill="#333"/><text x="${W - pad.r + 50}" y="${ly}" dominant-baseline="middle">no other pods</text>`,
  );
  ly += 18;
  legend.push(
    `<rect x="${W - pad.r + 25}" y="${ly - 4}" width="8" height="8" fill="none" stroke="#333"/><text x="${W - pad.r + 50}" y="${ly}" dominant-baseline="middle">${otherPods} other pods' chains</text>`,
  );
  out.push(...legend, "</svg>", "");
  return out.join("\n");
}
