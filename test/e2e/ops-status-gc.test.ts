// Operator commands in namespaces: `status` (scoped, unscoped, service-capturing, conflicting and orphan
// mappings), CNI GC and `gc` with two networks on one node.
import { rmSync } from "node:fs";
import { beforeAll, expect, it } from "vitest";
import { recordPath } from "../../src/host/record.js";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  chainRules,
  containerdMapping,
  describeRun,
  dnChainName,
  type Harness,
  type NetConfList,
  natSave,
  PLUGIN_TYPE,
  secondNetwork,
  stateDirFor,
} from "../support/harness.js";

interface Row {
  family: number;
  pod: string;
  protocol: string;
  hostPort: number;
  destinations: string[];
  target: string;
  state: string;
  captures: string[];
  winner: string | null;
}

async function start(h: Harness, name: string, list: NetConfList, opts: Parameters<Harness["startPod"]>[2]) {
  const started = await h.startPod(name, list, opts);
  if (!started.add.ok) throw new Error(describeRun(started.add));
  return started;
}

async function statusRows(h: Harness): Promise<Row[]> {
  const r = await h.operator(["status", "--json", "--cache-dir", h.cacheDir!]);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { mappings: Row[] }).mappings;
}

describeAsRoot("portmap-hostip status", () => {
  const h = useHarness({ libcniCache: true });
  let rows: Row[];
  let table: string;
  beforeAll(async () => {
    const scopedList = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true });
    const anyList = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "any" } });
    await start(h, "scoped", scopedList, {
      portMappings: [containerdMapping(8081, 80)],
      hostIPAnnotation: "192.0.2.11",
    });
    await start(h, "open", anyList, { portMappings: [containerdMapping(8082, 80)] });
    await start(h, "first", anyList, { portMappings: [containerdMapping(9090, 80, "udp")] });
    await start(h, "second", scopedList, {
      portMappings: [containerdMapping(9090, 80, "udp")],
      hostIPAnnotation: "192.0.2.10",
    });
    const gone = await start(h, "gone", scopedList, { portMappings: [containerdMapping(8083, 80)] });
    // The runtime lost track of this pod (its cache entry is gone) but its chain is still there.
    rmSync(h.cni.cacheFilePath(scopedList, gone.rt));
    rows = await statusRows(h);
    const text = await h.operator(["status", "--cache-dir", h.cacheDir!]);
    expect(text.code, text.stderr).toBe(0);
    table = text.stdout;
  });
  const row = (pod: string, family: number, port: number) =>
    rows.find((r) => r.pod === `default/${pod}` && r.family === family && r.hostPort === port);

  it("shows a scoped mapping with the addresses it matches", () => {
    expect(row("scoped", 4, 8081)).toMatchObject({ protocol: "tcp", destinations: ["192.0.2.11"], state: "scoped" });
    expect(row("scoped", 4, 8081)?.target).toMatch(/^10\.244\.1\.\d+:80$/);
  });

  it("shows an unscoped mapping that captures the ClusterIP on kube-ipvs0, and one that captures nothing (IPv6)", () => {
    expect(row("open", 4, 8082)).toMatchObject({
      destinations: [],
      state: "captures-service",
      captures: ["10.96.0.50"],
    });
    expect(row("open", 6, 8082)).toMatchObject({ destinations: [], state: "unscoped", captures: [] });
  });

  it("shows two pods claiming the same address:port as a conflict, won by the earlier rule", () => {
    expect(row("first", 4, 9090)).toMatchObject({ state: "conflict", winner: "default/first" });
    expect(row("second", 4, 9090)).toMatchObject({
      state: "conflict",
      winner: "default/first",
      destinations: ["192.0.2.10"],
    });
  });

  it("shows a chain without a live attachment as an orphan, named by its container ID", () => {
    const orphan = rows.find((r) => r.hostPort === 8083 && r.family === 4);
    expect(orphan).toMatchObject({ pod: `${h.topo.prefix}-gone`.replace(/[^a-zA-Z0-9_.-]/g, ""), state: "orphan" });
  });

  it("prints the same as an aligned table within 80 columns", () => {
    for (const line of table.split("\n")) expect(line.length).toBeLessThanOrEqual(80);
    expect(table).toMatch(/^POD +PORT +MATCHES +TO +STATE +TABLE\n/);
    expect(table).toMatch(
      /default\/open +8082\/tcp +\* \(IPv4\) +10\.244\.1\.\d+:80 +captures-service +\S+\n {2}- takes traffic for 10\.96\.0\.50\n/,
    );
    expect(table).toContain("  - shadowed by default/first\n");
  });
});

describeAsRoot("GC with two networks", () => {
  const h = useHarness({ libcniCache: true });
  let cbr0: NetConfList;
  let net2: NetConfList;
  const chains: Record<string, string> = {};
  beforeAll(async () => {
    cbr0 = bridgeConflist({ dataDir: h.topo.ipamDataDir });
    net2 = secondNetwork({ dataDir: h.topo.ipamDataDir, name: "net2" });
    for (const [name, list, port] of [
      ["a", cbr0, 8081],
      ["b", cbr0, 8082],
      ["c", net2, 8083],
      ["d", net2, 8084],
    ] as const) {
      const { pod, rt } = await start(h, name, list, {
        portMappings: [containerdMapping(port, 80)],
        hostIPAnnotation: "192.0.2.10",
      });
      chains[name] = dnChainName(list.name, pod.containerID);
      // b and d: pods the runtime no longer knows (a crash between portmap's ADD and libcni's bookkeeping, say).
      if (name === "b" || name === "d") {
        rmSync(h.cni.cacheFilePath(list, rt));
        // Long ago: no record of an ADD that may still be running protects them.
        rmSync(recordPath(stateDirFor(h.topo.ipamDataDir), list.name, pod.containerID));
      }
    }
  });
  const present = async (name: string) => (await chainRules(h.topo.node, chains[name]!)) !== null;

  it("gc --dry-run names the orphans of both networks and deletes nothing", async () => {
    const r = await h.operator([
      "gc",
      "--dry-run",
      "--cache-dir",
      h.cacheDir!,
      "--state-dir",
      stateDirFor(h.topo.ipamDataDir),
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`IPv4: would delete ${chains["b"]} (network cbr0,`);
    expect(r.stdout).toContain(`IPv4: would delete ${chains["d"]} (network net2,`);
    expect(r.stdout).not.toContain(chains["a"]!);
    for (const name of ["a", "b", "c", "d"]) expect(await present(name)).toBe(true);
  });

  it("CNI GC of cbr0 (cniVersion 1.1.0) removes only cbr0's orphan, with its jump", async () => {
    const ours = cbr0.plugins.find((p) => p.type === PLUGIN_TYPE)!;
    const a = `${h.topo.prefix}-a`.replace(/[^a-zA-Z0-9_.-]/g, "");
    const before = await natSave(h.topo.node, 4);
    const run = await h.cni.gc({ ...cbr0, cniVersion: "1.1.0", plugins: [ours] }, [{ containerID: a, ifname: "eth0" }]);
    expect(run.ok, describeRun(run)).toBe(true);
    const after = await natSave(h.topo.node, 4);
    expect(before.filter((l) => !after.includes(l)).every((l) => l.includes(chains["b"]!))).toBe(true);
    expect(after.some((l) => l.includes(chains["b"]!))).toBe(false);
    expect(after.length).toBe(before.length - before.filter((l) => l.includes(chains["b"]!)).length);
    for (const name of ["a", "c", "d"]) expect(await present(name)).toBe(true);
  });

  it("gc removes the other network's orphan and leaves live pods alone", async () => {
    const r = await h.operator([
      "gc",
      "--grace",
      "0",
      "--cache-dir",
      h.cacheDir!,
      "--state-dir",
      stateDirFor(h.topo.ipamDataDir),
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`IPv4: deleted ${chains["d"]} (network net2,`);
    expect(await present("d")).toBe(false);
    for (const name of ["a", "c"]) expect(await present(name)).toBe(true);
    const again = await h.operator([
      "gc",
      "--grace",
      "0",
      "--cache-dir",
      h.cacheDir!,
      "--state-dir",
      stateDirFor(h.topo.ipamDataDir),
    ]);
    expect(again.stdout).toBe("no orphan portmap chains\n");
  });
});
