// `npm run bench -- --profile` (through bench/run): where one ADD of ours spends its time, at each table size and
// iptables variant, in the bench's namespaces:
// - a timeline of the processes it starts (strace -f --seccomp-bpf: execve and exit of each, relative to our
//   exec), and
// - a V8 CPU profile of the bundle (node --cpu-prof): self time by module and the heaviest functions.
// Not timings to compare (strace and the profiler slow things down): pointers to the cost.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { growPayload } from "./kube.js";
import { BenchNode, cniOk, type Variant, which } from "./setup.js";

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Self time (ms) per script and per function of a .cpuprofile. */
function summarize(profile: CpuProfile): { total: number; byUrl: [string, number][]; byFunction: [string, number][] } {
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  });
  const byUrl = new Map<string, number>();
  const byFunction = new Map<string, number>();
  for (const node of profile.nodes) {
    const t = self.get(node.id) ?? 0;
    if (t === 0) continue;
    const url =
      node.callFrame.url === ""
        ? `(${node.callFrame.functionName || "native"})`
        : node.callFrame.url.replace(/^.*\//, "");
    byUrl.set(url, (byUrl.get(url) ?? 0) + t);
    const fn = `${node.callFrame.functionName || "(anonymous)"} ${url}:${node.callFrame.lineNumber + 1}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + t);
  }
  const top = (m: Map<string, number>, n: number): [string, number][] =>
    [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, n);
  return { total: (profile.endTime - profile.startTime) / 1000, byUrl: top(byUrl, 8), byFunction: top(byFunction, 12) };
}

/** strace -f -ttt output → one line per execve / exit, in ms since the first line. */
function timeline(trace: string): string[] {
  // Failed execve calls are PATH lookups; the exits of Node's own threads say nothing.
  const lines = trace.split("\n").filter((l) => (/execve\(/.test(l) && !/ = -1 /.test(l)) || /exit_group/.test(l));
  const t0 = Number(/^\d+\s+(\d+\.\d+)/.exec(lines[0] ?? "")?.[1] ?? 0);
  return lines.map((l) => {
    const m = /^(\d+)\s+(\d+\.\d+)\s+(.*)$/.exec(l);
    if (!m) return l;
    const what = m[3]!.replace(
      /execve\("([^"]+)", \[([^\]]*)\].*\) = (\S+).*/,
      (_s, file: string, argv: string, rc: string) => `exec ${file} [${argv.slice(0, 80)}] = ${rc}`,
    );
    return `${((Number(m[2]) - t0) * 1000).toFixed(1).padStart(7)} ms  pid ${m[1]}  ${what}`;
  });
}

export async function profile(
  variants: Variant[],
  sizes: number[],
  runnerScript: string,
  bundle: string,
): Promise<void> {
  for (const variant of variants) {
    const node = await BenchNode.create(variant, runnerScript);
    try {
      const pod = await node.addPod();
      let size = 0;
      for (const target of sizes) {
        if (target !== size) await node.restore(growPayload(size, target).payload);
        size = target;
        process.stdout.write(`\n## ${variant}, ${size} unrelated rules\n`);
        const pm = await cniOk(node.runner, node.portmapAdd(pod), "portmap ADD");
        const written = (await node.listChain(pod.chain)).rules;
        const reset = ["*nat", `:${pod.chain} - [0:0]`, ...written, "COMMIT", ""].join("\n");

        // Process timeline of the bundle's ADD (shebang, env, node, and each tool it runs).
        const traceFile = join(node.h.topo.tmpDir, "trace");
        const add = node.oursAdd(bundle, pod, pm.output);
        node.forget([pod]);
        await cniOk(
          node.runner,
          {
            ...add,
            file: which("strace", node.path),
            args: ["-f", "--seccomp-bpf", "-ttt", "-e", "trace=execve,exit_group", "-o", traceFile, add.file],
          },
          "strace ADD",
        );
        process.stdout.write(`\nprocesses (strace -f):\n${timeline(readFileSync(traceFile, "utf8")).join("\n")}\n`);
        await node.restore(reset);

        // CPU profile of the same ADD, run by the system's node directly.
        const dir = mkdtempSync(join(node.h.topo.tmpDir, "prof-"));
        node.forget([pod]);
        await cniOk(
          node.runner,
          { ...add, file: which("node", node.path), args: ["--cpu-prof", "--cpu-prof-dir", dir, bundle] },
          "profiled ADD",
        );
        const file = readdirSync(dir).find((f) => f.endsWith(".cpuprofile"));
        if (file) {
          const s = summarize(JSON.parse(readFileSync(join(dir, file), "utf8")) as CpuProfile);
          process.stdout.write(
            `\nCPU profile (node --cpu-prof, ${s.total.toFixed(1)} ms from V8 start to exit), self time by script:\n`,
          );
          for (const [url, t] of s.byUrl) process.stdout.write(`  ${t.toFixed(1).padStart(6)} ms  ${url}\n`);
          process.stdout.write("heaviest functions (self):\n");
          for (const [fn, t] of s.byFunction) process.stdout.write(`  ${t.toFixed(1).padStart(6)} ms  ${fn}\n`);
        }
        rmSync(dir, { recursive: true, force: true });
        await node.restore(reset);
        await cniOk(node.runner, node.portmapDel(pod), "portmap DEL");
      }
    } finally {
      await node.destroy();
    }
  }
}
