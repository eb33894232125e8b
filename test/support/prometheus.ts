// A real Prometheus (Debian's `prometheus` package) started privately inside a test's namespace: its own config,
// data directory and port, scraping one target every second; its HTTP API queried with curl in the same namespace.
import type { ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { nsRun, nsRunOk, startInNs, stopChild } from "./netns.js";

export interface Sample {
  metric: Record<string, string>;
  value: number;
}

export interface RunningPrometheus {
  child: ChildProcess;
  /** An instant query through /api/v1/query: its samples. */
  query(expr: string): Promise<Sample[]>;
  stop(): Promise<void>;
}

const READY_MS = 30_000;

/** Starts Prometheus in `ns` on 127.0.0.1:`port`, its data under `dir`, scraping http://`target`/metrics. */
export async function startPrometheus(
  ns: string,
  dir: string,
  port: number,
  target: string,
): Promise<RunningPrometheus> {
  const config = join(dir, "prometheus.yml");
  writeFileSync(
    config,
    [
      "global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }",
      "scrape_configs:",
      "  - job_name: portmap-hostip",
      `    static_configs: [{ targets: ["${target}"] }]`,
      "",
    ].join("\n"),
  );
  const child = startInNs(ns, "prometheus", [
    `--config.file=${config}`,
    `--storage.tsdb.path=${join(dir, "data")}`,
    `--web.listen-address=127.0.0.1:${port}`,
    "--log.level=warn",
  ]);
  let log = "";
  child.stderr?.on("data", (d: Buffer) => (log += d.toString()));
  const api = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + READY_MS;
  for (;;) {
    const r = await nsRun(ns, "curl", ["-sf", "--max-time", "2", `${api}/-/ready`], { timeoutMs: 5_000 });
    if (r.code === 0) break;
    if (Date.now() > deadline || child.exitCode !== null) {
      await stopChild(child);
      throw new Error(`prometheus not ready within ${READY_MS} ms:\n${log}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return {
    child,
    async query(expr) {
      const url = `${api}/api/v1/query?query=${encodeURIComponent(expr)}`;
      const body = JSON.parse(await nsRunOk(ns, "curl", ["-sf", "--max-time", "5", url], { timeoutMs: 10_000 })) as {
        status: string;
        data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> };
      };
      if (body.status !== "success") throw new Error(`prometheus query ${expr}: ${JSON.stringify(body)}`);
      return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
    stop: () => stopChild(child),
  };
}
