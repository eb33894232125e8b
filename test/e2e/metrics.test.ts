// The keeper's metrics, scraped by a real Prometheus (Debian's package, started privately in the node namespace
// with its own data directory and port): the node's hostPort mappings by state — a pod the default left closed
// among them —, a nat flush repaired and counted, passes by trigger, build info; `promtool check metrics` passes on
// the exposition; status shows the closed mapping with its reason; the keeper's JSON log says what it repaired.
// Every wait polls up to a deadline; none is timed.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeAsRoot, eventually, useHarness } from "../support/e2e.js";
import { bridgeConflist, containerdMapping, describeRun, NODE_IP1, whoAnswers } from "../support/harness.js";
import { type RunningKeeper, startKeeper } from "../support/keeper.js";
import { nsRunOk } from "../support/netns.js";
import { type RunningPrometheus, startPrometheus } from "../support/prometheus.js";

const METRICS = "127.0.0.1:9101";

describeAsRoot("the keeper's metrics, scraped by Prometheus", () => {
  const h = useHarness({ libcniCache: true });
  let keeper: RunningKeeper;
  let prometheus: RunningPrometheus;
  const value = async (expr: string): Promise<number | undefined> => (await prometheus.query(expr))[0]?.value;

  beforeAll(async () => {
    const stateDir = join(h.topo.tmpDir, "state");
    const confDir = join(h.topo.tmpDir, "net.d");
    const binDir = join(h.topo.tmpDir, "bin");
    const promDir = join(h.topo.tmpDir, "prometheus");
    for (const d of [confDir, binDir, promDir]) mkdirSync(d);
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { stateDir } });
    writeFileSync(join(confDir, "10-bridge.conflist"), JSON.stringify(list, null, 2));
    const web = await h.startPod("web", list, { portMappings: [containerdMapping(8080, 80)], serve: { tcp: [80] } });
    expect(web.add.ok, describeRun(web.add)).toBe(true);
    // Its entry names an interface the node lacks: "node" finds no address, the pod starts closed.
    const shutList = bridgeConflist({
      dataDir: h.topo.ipamDataDir,
      hostip: { stateDir, nodeInterfaces: ["nowhere0"] },
    });
    const shut = await h.startPod("shut", shutList, { portMappings: [containerdMapping(8081, 80)] });
    expect(shut.add.ok, describeRun(shut.add)).toBe(true);
    keeper = await startKeeper(
      h.topo.node,
      { binDir, confDir, cacheDir: h.cacheDir!, stateDir },
      5,
      h.iptables.path ?? process.env["PATH"] ?? "",
      ["--metrics-address", METRICS, "--log-format", "json"],
    );
    prometheus = await startPrometheus(h.topo.node, promDir, 9090, METRICS);
  });

  afterAll(async () => {
    await prometheus?.stop();
    if (keeper && keeper.child.exitCode === null) keeper.child.kill("SIGKILL");
  });

  it("exposes what promtool accepts", async () => {
    const text = await nsRunOk(h.topo.node, "curl", ["-sf", "--max-time", "5", `http://${METRICS}/metrics`]);
    expect(text).toContain("# TYPE portmap_hostip_mappings gauge");
    await nsRunOk(h.topo.node, "promtool", ["check", "metrics"], { input: text });
  });

  it("shows the mappings by state, the closed one among them, and the build", async () => {
    await eventually(
      "Prometheus sees one scoped and one closed IPv4 mapping",
      async () =>
        (await value('portmap_hostip_mappings{state="scoped",family="4"}')) === 1 &&
        (await value('portmap_hostip_mappings{state="closed",family="4"}')) === 1,
    );
    const [build] = await prometheus.query("portmap_hostip_build_info");
    // The harness's pods are in iptables-nft's nat table (the node may have legacy's binaries too).
    expect(build?.metric).toMatchObject({ node_version: expect.stringMatching(/^v\d+/), backends: "iptables-nft" });
    expect(build?.metric["iptables"]?.split(",")).toContain("nft");
    expect(await value('portmap_hostip_pass_duration_seconds_count{trigger="start"}')).toBe(1);
    expect(await value("portmap_hostip_last_success_timestamp_seconds")).toBeGreaterThan(0);
  });

  it("status shows the closed mapping with its reason", async () => {
    const r = await h.operator(["status", "--json", "--cache-dir", h.cacheDir!]);
    const rows = (JSON.parse(r.stdout) as { mappings: Array<Record<string, unknown>> }).mappings;
    expect(rows.find((row) => row["hostPort"] === 8081)).toMatchObject({
      state: "closed",
      destinations: ["127.0.0.1"],
      reason: `defaultHostIP "node" found no node address of the pod's families (IPv4)`,
    });
    expect(rows.find((row) => row["hostPort"] === 8080)).toMatchObject({ state: "scoped", reason: null });
  });

  it("counts the repair of a nat flush, by its cause and trigger, and logs it as JSON", async () => {
    await nsRunOk(h.topo.node, "iptables-nft", ["-w", "-t", "nat", "-F"]);
    await eventually(
      "Prometheus counts both pods' chains rebuilt after a firewall event",
      async () =>
        ((await value('portmap_hostip_repairs_total{cause="chain_rebuilt"}')) ?? 0) >= 2 &&
        ((await value('portmap_hostip_pass_duration_seconds_count{trigger="firewall"}')) ?? 0) >= 1,
    );
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8080, { timeoutMs: 700, attempts: 3 })).toBe("pod-web");
    await eventually(
      "the mappings are scoped and closed again",
      async () =>
        (await value('portmap_hostip_mappings{state="scoped",family="4"}')) === 1 &&
        (await value('portmap_hostip_mappings{state="closed",family="4"}')) === 1,
    );
    if (process.env["PMH_SHOW"]) console.log(keeper.output());
    const lines = keeper
      .output()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.find((l) => l["event"] === "repaired" && l["pod"] === "default/web")).toMatchObject({
      level: "info",
      trigger: "firewall",
      family: 4,
      chain: expect.stringMatching(/^CNI-DN-/),
      cause: "chain_rebuilt",
      message: expect.stringMatching(
        /^keeper \(rules changed\): (iptables-nft )?IPv4: default\/web \(cbr0, \S+\): rewrote/,
      ),
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
    // The closed mapping said once, though the flush took its rules too and the keeper put them back.
    expect(lines.filter((l) => l["event"] === "closed")).toEqual([
      expect.objectContaining({
        level: "warning",
        pod: "default/shut",
        family: 4,
        cause: `defaultHostIP "node" found no node address of the pod's families (IPv4)`,
      }),
    ]);
    // Every line is one JSON object, the installer's too.
    for (const line of keeper
      .output()
      .split("\n")
      .filter((l) => l !== ""))
      expect(() => JSON.parse(line)).not.toThrow();
  });
});
