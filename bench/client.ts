// The bench's side of the runner: starts it inside the node namespace (through the harness, which kills it
// and removes the namespace whatever happens) and sends it jobs.

import type { ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { spawnInNs, stopChild } from "../test/support/netns.js";
import type { Job, JobResult, Request, Response } from "./protocol.js";

export class Runner {
  private nextId = 1;
  private readonly pending = new Map<number, (r: Response) => void>();

  private constructor(
    private readonly child: ChildProcess,
    private readonly socket: Socket,
  ) {
    createInterface({ input: socket }).on("line", (line) => {
      const response = JSON.parse(line) as Response;
      this.pending.get(response.id)?.(response);
      this.pending.delete(response.id);
    });
  }

  /** Starts the runner script (`runnerScript`, run by this Node) inside `ns`; its files go below `workDir`. */
  static async start(ns: string, runnerScript: string, workDir: string): Promise<Runner> {
    const socketPath = join(workDir, "runner.sock");
    const scratch = join(workDir, "runner");
    mkdirSync(scratch, { recursive: true });
    const child = await spawnInNs(ns, process.execPath, [runnerScript, socketPath, scratch], "ready");
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(socketPath, () => resolve(s));
      s.once("error", reject);
    });
    return new Runner(child, socket);
  }

  private send(request: Omit<Request, "id"> & { op: Request["op"] }): Promise<Response> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.socket.write(`${JSON.stringify({ ...request, id })}\n`);
    });
  }

  async run(job: Job): Promise<JobResult> {
    const r = await this.send({ op: "run", job } as Request);
    return r.results[0]!;
  }

  /** Like run(), but throws unless the job exits 0. */
  async runOk(job: Job): Promise<JobResult> {
    const r = await this.run(job);
    if (r.code !== 0)
      throw new Error(`${job.file} ${job.args.join(" ")} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
    return r;
  }

  /** Starts every job at once; wall time from the first spawn to the last exit. */
  async batch(jobs: Job[]): Promise<{ wallNs: number; results: JobResult[] }> {
    const r = await this.send({ op: "batch", jobs } as Request);
    return { wallNs: r.wallNs, results: r.results };
  }

  async stop(): Promise<void> {
    this.socket.destroy();
    await stopChild(this.child);
  }
}
