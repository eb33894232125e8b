// The bench's timer, started once inside the node namespace (`ip netns exec <node> node bench-runner.mjs <socket>`)
// so that timed processes start directly, as a runtime starts plugins in its host namespace, with no
// `ip netns exec` in the measurement. It serves JSON lines on a unix socket (a path in the file system, hence
// reachable from the bench's own namespace): one request, one answer, in order. The bench owns both paths
// (they live in the topology's temporary directory) and kills this process when it is done.
import { readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { run } from "../src/host/run.js";
import type { Job, JobResult, Request, Response } from "./protocol.js";

const TIME = "/usr/bin/time";
const [socketPath, scratch] = process.argv.slice(2);
if (socketPath === undefined || scratch === undefined)
  throw new Error("usage: bench-runner <socket path> <scratch directory>");
const rssDir: string = scratch;
let rssCount = 0;

/** Starts one job; resolves when it has exited and its output is closed. */
async function start(job: Job): Promise<JobResult> {
  // Peak RSS: GNU time reports the largest ru_maxrss of the process and what it waited for (wait4); with it the
  // CPU time (user + system, 10 ms resolution) of the whole tree.
  const rssFile = job.rss ? join(rssDir, `${rssCount++}`) : undefined;
  const [file, args] =
    rssFile === undefined ? [job.file, job.args] : [TIME, ["-f", "%M %U %S", "-o", rssFile, job.file, ...job.args]];
  let result: JobResult;
  try {
    const r = await run(file, args, { env: job.env, input: job.input ?? "", timeoutMs: job.timeoutMs ?? 120_000 });
    result = { code: r.code, ns: r.ns, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    result = { code: 127, ns: 0, stdout: "", stderr: (e as Error).message };
  }
  if (rssFile !== undefined) {
    try {
      const [kib, user, sys] = (readFileSync(rssFile, "utf8").trim().split("\n").pop() ?? "").split(" ").map(Number);
      if (kib !== undefined && Number.isFinite(kib)) result.rssKiB = kib;
      if (user !== undefined && sys !== undefined && Number.isFinite(user + sys))
        result.cpuMs = Math.round((user + sys) * 1000);
    } catch {
      // time did not get to write it: no RSS
    }
    rmSync(rssFile, { force: true });
  }
  return result;
}

async function serve(request: Request): Promise<Response> {
  if (request.op === "run") return { id: request.id, results: [await start(request.job)], wallNs: 0 };
  // All jobs started in the same tick; wall time until the last one has exited.
  const t0 = process.hrtime.bigint();
  const results = await Promise.all(request.jobs.map(start));
  return { id: request.id, results, wallNs: Number(process.hrtime.bigint() - t0) };
}

const server = createServer((conn) => {
  const lines = createInterface({ input: conn });
  // One request at a time: a timing never overlaps another.
  let queue = Promise.resolve();
  lines.on("line", (line) => {
    queue = queue.then(async () => {
      const response = await serve(JSON.parse(line) as Request);
      conn.write(`${JSON.stringify(response)}\n`);
    });
  });
});
server.listen(socketPath, () => process.stdout.write("ready\n"));
