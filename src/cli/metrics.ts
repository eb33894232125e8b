// The keeper's Prometheus metrics (install --watch --metrics-address HOST:PORT): GET /metrics in Prometheus'
// text format, from prom-client. Loaded only with --metrics-address: no pod start, no operator command and no
// keeper without it loads this module, prom-client or node:http.
import { createServer } from "node:http";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { FAMILIES } from "../core/ip.js";
import type { IptablesVariant } from "../core/node.js";
import { STATES } from "../ops/status.js";
import type { FailureKind, ObservedPass, PassObserver, RepairCause, Trigger } from "./keeper.js";
import { commit, version } from "./version.js";

const TRIGGERS: readonly Trigger[] = ["start", "resync", "address", "firewall", "conflist", "confirming"];
const CAUSES: readonly RepairCause[] = ["chain_rebuilt", "rescoped_address", "dead_chain_removed", "entry_put_back"];
const KINDS: readonly FailureKind[] = ["pass", "read", "write", "pod", "heartbeat", "event"];
// A scrape takes microseconds; a client that holds a connection longer is gone or hostile.
const REQUEST_TIMEOUT_MS = 10_000;
const LISTEN_TIMEOUT_MS = 5_000;

export interface MetricsAddress {
  /** Undefined: every address. */
  host: string | undefined;
  port: number;
}

export class KeeperMetrics implements PassObserver {
  readonly wantsRows = true;
  readonly registry = new Registry();
  private readonly mappings: Gauge<"state" | "family">;
  private readonly passes: Histogram<"trigger">;
  private readonly repairs: Counter<"cause">;
  private readonly failures: Counter<"kind">;
  private readonly lastSuccess: Gauge;
  private readonly build: Gauge<"version" | "commit" | "node_version" | "iptables" | "backends">;
  private iptables = "unknown";
  private backends = "";

  constructor() {
    // prom-client's default Node.js metrics are left out: promtool refuses their names (gauges ending in
    // _total), and the kubelet measures the container's CPU and memory already.
    const registers = [this.registry];
    this.mappings = new Gauge({
      name: "portmap_hostip_mappings",
      help: "hostPort mappings on this node by state (as `portmap-hostip status` shows them) and IP family",
      labelNames: ["state", "family"],
      registers,
    });
    this.passes = new Histogram({
      name: "portmap_hostip_pass_duration_seconds",
      help: "Duration of the keeper's passes, by what started them (its _count: passes by trigger)",
      labelNames: ["trigger"],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.repairs = new Counter({
      name: "portmap_hostip_repairs_total",
      help: "What the keeper put right, by cause",
      labelNames: ["cause"],
      registers,
    });
    this.failures = new Counter({
      name: "portmap_hostip_failures_total",
      help: "The keeper's failures, by kind",
      labelNames: ["kind"],
      registers,
    });
    this.lastSuccess = new Gauge({
      name: "portmap_hostip_last_success_timestamp_seconds",
      help: "When the keeper last completed a pass (Unix time)",
      registers,
    });
    this.build = new Gauge({
      name: "portmap_hostip_build_info",
      help: "The keeper's build: version, commit, Node.js version, the iptables variants it reads and the portmap backends in use",
      labelNames: ["version", "commit", "node_version", "iptables", "backends"],
      registers,
    });
    // Every series from the start: a rate() or an absent() needs no first event.
    for (const state of STATES) for (const family of FAMILIES) this.mappings.set({ state, family: `${family}` }, 0);
    for (const trigger of TRIGGERS) this.passes.zero({ trigger });
    for (const cause of CAUSES) this.repairs.inc({ cause }, 0);
    for (const kind of KINDS) this.failures.inc({ kind }, 0);
    this.buildInfo();
  }

  /** The iptables variants whose nat tables the keeper reads ("nft", "legacy", "legacy,nft"). */
  watching(variants: readonly IptablesVariant[]): void {
    this.iptables = [...variants].sort().join(",");
    this.buildInfo();
  }

  passed(p: ObservedPass): void {
    this.passes.observe({ trigger: p.trigger }, p.seconds);
    for (const r of p.repairs) this.repairs.inc({ cause: r.cause });
    for (const kind of p.failures) this.failures.inc({ kind });
    if (p.ok) this.lastSuccess.set(Date.now() / 1000);
    if (p.rows) {
      for (const state of STATES)
        for (const family of FAMILIES)
          this.mappings.set(
            { state, family: `${family}` },
            p.rows.filter((r) => r.state === state && r.family === family).length,
          );
    }
    // A backend is in use where portmap has written (its chains or tables are there).
    const read = p.report?.seen?.rules;
    const backends = [...new Set(read?.filter((r) => r.portmapWrote).map((r) => r.backend.name))].sort().join(",");
    if (read && backends !== this.backends) {
      this.backends = backends;
      this.buildInfo();
    }
  }

  entryPutBack(): void {
    this.repairs.inc({ cause: "entry_put_back" });
  }

  /** A failure outside the passes (a Kubernetes Event not recorded). */
  failed(kind: FailureKind): void {
    this.failures.inc({ kind });
  }

  private buildInfo(): void {
    this.build.reset();
    this.build.set(
      { version, commit, node_version: process.version, iptables: this.iptables, backends: this.backends },
      1,
    );
  }
}

/** Serves `metrics` on GET /metrics at `address` until `signal`; rejects when it cannot listen there. */
export async function serveMetrics(
  metrics: KeeperMetrics,
  address: MetricsAddress,
  signal: AbortSignal,
): Promise<void> {
  const server = createServer((req, res) => {
    if (req.method !== "GET" || (req.url !== "/metrics" && !req.url?.startsWith("/metrics?"))) {
      res.writeHead(404, { "Content-Type": "text/plain" }).end("only GET /metrics here\n");
      return;
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { "Content-Type": metrics.registry.contentType }).end(text),
      (err: Error) => res.writeHead(500, { "Content-Type": "text/plain" }).end(`${err.message}\n`),
    );
  });
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.headersTimeout = REQUEST_TIMEOUT_MS;
  const host = address.host ?? "";
  const where = `${host.includes(":") ? `[${host}]` : host}:${address.port}`;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`--metrics-address ${where}: not listening after ${LISTEN_TIMEOUT_MS} ms`)),
      LISTEN_TIMEOUT_MS,
    );
    server.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`--metrics-address ${where}: cannot listen: ${err.message}`, { cause: err }));
    });
    server.listen(address.port, address.host, () => {
      clearTimeout(timer);
      resolve();
    });
  });
  const close = () => {
    server.close();
    server.closeAllConnections();
  };
  if (signal.aborted) close();
  else signal.addEventListener("abort", close, { once: true });
}
