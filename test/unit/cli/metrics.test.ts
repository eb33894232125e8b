// The keeper's metrics: what a pass counts, every series there from the start, and /metrics served (or a clear
// error naming the flag when the address is taken).
import { createServer } from "node:net";
import { describe, expect, it } from "vitest";
import { KeeperMetrics, serveMetrics } from "../../../src/cli/metrics.js";
import type { PassReport } from "../../../src/ops/pass.js";
import type { StatusRow } from "../../../src/ops/status.js";
import { observedPass } from "./observed-pass.js";

const row = (state: StatusRow["state"], family: 4 | 6) => ({ state, family }) as StatusRow;

/** The value of one series in the exposition. */
const value = (text: string, series: string) => {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

describe("the keeper's metrics", () => {
  it("have every series from the start", async () => {
    const text = await new KeeperMetrics().registry.metrics();
    expect(value(text, 'portmap_hostip_mappings{state="closed",family="6"}')).toBe(0);
    expect(value(text, 'portmap_hostip_repairs_total{cause="entry_put_back"}')).toBe(0);
    expect(value(text, 'portmap_hostip_failures_total{kind="event"}')).toBe(0);
    expect(value(text, 'portmap_hostip_pass_duration_seconds_count{trigger="address"}')).toBe(0);
    expect(text).toMatch(
      /^portmap_hostip_build_info\{version="[^"]+",commit="[^"]+",node_version="v\d+[^"]*",iptables="unknown",backends=""\} 1$/m,
    );
  });

  it("count what passes did", async () => {
    const m = new KeeperMetrics();
    m.watching(["legacy", "nft"]);
    const rules = (name: string, portmapWrote: boolean) => ({ backend: { name }, portmapWrote });
    const seen = { rules: [rules("iptables-nft", true), rules("iptables-legacy", false), rules("nftables", true)] };
    const report = { families: [], seen } as unknown as PassReport;
    m.passed(
      observedPass({
        trigger: "firewall",
        report,
        repairs: [
          { cause: "chain_rebuilt", pod: undefined, family: 4, place: "a" },
          { cause: "chain_rebuilt", pod: undefined, family: 6, place: "a" },
          { cause: "dead_chain_removed", pod: undefined, family: 4, place: "b" },
        ],
        failures: ["write"],
        rows: [row("scoped", 4), row("scoped", 4), row("closed", 4), row("unscoped", 6)],
      }),
    );
    m.passed(observedPass({ rows: [row("scoped", 4)], ok: false }));
    m.entryPutBack();
    m.failed("event");
    const text = await m.registry.metrics();
    expect(value(text, 'portmap_hostip_mappings{state="scoped",family="4"}')).toBe(1);
    expect(value(text, 'portmap_hostip_mappings{state="closed",family="4"}')).toBe(0);
    expect(value(text, 'portmap_hostip_repairs_total{cause="chain_rebuilt"}')).toBe(2);
    expect(value(text, 'portmap_hostip_repairs_total{cause="dead_chain_removed"}')).toBe(1);
    expect(value(text, 'portmap_hostip_repairs_total{cause="entry_put_back"}')).toBe(1);
    expect(value(text, 'portmap_hostip_failures_total{kind="write"}')).toBe(1);
    expect(value(text, 'portmap_hostip_failures_total{kind="event"}')).toBe(1);
    expect(value(text, 'portmap_hostip_pass_duration_seconds_count{trigger="firewall"}')).toBe(1);
    expect(value(text, 'portmap_hostip_pass_duration_seconds_count{trigger="resync"}')).toBe(1);
    expect(value(text, "portmap_hostip_last_success_timestamp_seconds")).toBeGreaterThan(1.7e9);
    expect(text).toMatch(/iptables="legacy,nft",backends="iptables-nft,nftables"\} 1$/m);
  });

  it("are served on GET /metrics; an address in use is an error naming the flag", async () => {
    const controller = new AbortController();
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const { port } = taken.address() as { port: number };
    try {
      const m = new KeeperMetrics();
      await expect(serveMetrics(m, { host: "127.0.0.1", port }, controller.signal)).rejects.toThrow(
        `--metrics-address 127.0.0.1:${port}: cannot listen: listen EADDRINUSE`,
      );
      await new Promise((resolve) => taken.close(resolve));
      await serveMetrics(m, { host: "127.0.0.1", port }, controller.signal);
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect([res.status, res.headers.get("content-type")]).toEqual([200, "text/plain; version=0.0.4; charset=utf-8"]);
      expect(await res.text()).toContain("# TYPE portmap_hostip_repairs_total counter");
      expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(404);
    } finally {
      controller.abort();
      taken.close();
    }
  });
});
