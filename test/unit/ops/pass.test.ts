// One keeper pass (the keeper's, reconcile's and gc's): when a dead pod's rules go, and what a pass hands each
// backend. The backends are the tests' own; the result cache is libcni's layout in a temporary directory, the
// node's network printed by a stand-in `ip` (test/fixtures/host).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type BackendPass, emptyOutcome, type NodeRules, type PassOptions } from "../../../src/backends/backend.js";
import { CONFIRM_MS, DEAD_CONFIRM_MS, deadChainGoes, keeperPass, newMemory } from "../../../src/ops/pass.js";
import { cacheEntryJson, cacheFileName } from "../../support/result-cache.js";
import { fakeBackend } from "../fake-backend.js";
import { NODE } from "../fixtures.js";
import { IP, standInTools, type Tools } from "../tools.js";

describe("when a dead pod's rules go", () => {
  it("decides when a dead chain goes: conflicting and deleted at once, conflicting after a second look, others after the grace", () => {
    const goes = (conflicting: boolean, deleted: boolean, age: number) =>
      deadChainGoes({ conflicting, deleted, age, graceMs: 30_000 });
    expect([
      goes(true, true, 0),
      goes(true, false, 0),
      goes(true, false, DEAD_CONFIRM_MS),
      goes(false, true, 29_999),
      goes(false, false, 30_000),
    ]).toEqual([true, false, true, false, true]);
  });

  it("under gc (conflictsFirst false), only after the grace, conflicting or not", () => {
    const goes = (conflicting: boolean, deleted: boolean, age: number) =>
      deadChainGoes({ conflicting, deleted, age, graceMs: 30_000, conflictsFirst: false });
    expect([
      goes(true, true, 0),
      goes(true, false, DEAD_CONFIRM_MS),
      goes(true, true, 29_999),
      goes(true, false, 30_000),
      goes(false, false, 30_000),
    ]).toEqual([false, false, false, true, true]);
  });
});

describe("a keeper pass", () => {
  const OPTIONS: PassOptions = {
    dryRun: true,
    rebuild: true,
    networks: [],
    fallbackEntry: undefined,
    graceMs: 30_000,
    conflictsFirst: true,
    cniBinDir: "/opt/cni/bin",
    cniIptables: undefined,
  };
  let dir: string;
  let tools: Tools;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "pmh-pass-"));
    tools = standInTools({ ip: IP });
    vi.stubEnv("PATH", tools.bin);
  });
  afterEach(() => {
    vi.unstubAllEnvs();
    tools.remove();
    rmSync(dir, { recursive: true, force: true });
  });
  const dirs = () => ({ cacheDir: join(dir, "cache"), stateDir: join(dir, "state") });
  /** libcni's cache entry of pod default/web (container abc123) of network cbr0. */
  function cached(containerID = "abc123"): void {
    const entry = {
      list: { name: "cbr0", cniVersion: "1.0.0", plugins: [{ type: "portmap" }, { type: "portmap-hostip" }] },
      containerID,
      ifName: "eth0",
      args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
      result: { cniVersion: "1.0.0", ips: [{ address: "10.244.1.5/24" }] },
    };
    mkdirSync(join(dirs().cacheDir, "results"), { recursive: true });
    writeFileSync(join(dirs().cacheDir, "results", cacheFileName(entry)), cacheEntryJson(entry));
  }
  /**
   * A backend whose rules hold container abc123; the pass it was handed is kept in `passes`, whether it may rebuild
   * each live attachment in `rebuilds`.
   */
  const holder = (passes: BackendPass[], rebuilds: boolean[] = []) => {
    const backend = fakeBackend("b", {
      read: async (): Promise<NodeRules> => ({
        backend,
        families: [4],
        problems: ["b: one family not read"],
        portmapWrote: true,
        tablesExist: true,
        keyOf: (pod) => pod.containerId,
        pods: () => [],
        holds: (pod) => pod.containerId === "abc123",
        collect: async () => [],
        keep: async (pass) => {
          // As a backend asks when a live attachment's rules need a rebuild.
          rebuilds.push(...pass.live.map((l) => pass.mayRebuild(l.key)));
          passes.push(pass);
          return { families: [{ ...emptyOutcome("b", 4), correct: pass.live.length }], problems: [] };
        },
      }),
    });
    return backend;
  };

  it("without a result cache judges nothing, and says so", async () => {
    const passes: BackendPass[] = [];
    const report = await keeperPass([holder(passes)], dirs(), newMemory(), OPTIONS);
    expect(report).toEqual({
      judged: false,
      families: [],
      problems: [`no result cache at ${join(dirs().cacheDir, "results")} (yet): nothing to rebuild from`],
      pending: false,
      dead: 0,
      read: false,
    });
    expect(passes).toEqual([]);
  });

  it("hands each live attachment to the backend holding its rules, and lets a backend it cannot read sit out", async () => {
    cached();
    const passes: BackendPass[] = [];
    const unreadable = fakeBackend("a", {
      read: async () => {
        throw new Error("cannot run a-tool: spawn a-tool ENOENT");
      },
    });
    const report = await keeperPass([unreadable, holder(passes)], dirs(), newMemory(), OPTIONS);
    expect(report.problems).toEqual([
      "a rules not read: cannot run a-tool: spawn a-tool ENOENT",
      "b: one family not read",
    ]);
    expect(report.families).toEqual([{ ...emptyOutcome("b", 4), correct: 1 }]);
    const [pass] = passes;
    expect(pass?.live.map((l) => [l.key, l.label, l.record])).toEqual([
      ["cbr0\nabc123", "default/web (cbr0, abc123)", undefined],
    ]);
    expect(pass?.view.network).toEqual({ ...NODE, down: [] });
    expect([...(pass?.gcNetworks ?? [])]).toEqual(["cbr0"]);
    expect([pass?.verdict("cbr0", "abc123"), pass?.verdict("cbr0", "gone")]).toEqual(["live", "dead"]);
  });

  it("rebuilds a live attachment without a record only when a second look, CONFIRM_MS on, still finds it", async () => {
    cached();
    const rebuilds: boolean[] = [];
    const backend = holder([], rebuilds);
    const memory = newMemory();
    const first = await keeperPass([backend], dirs(), memory, OPTIONS);
    expect([rebuilds, first.pending, [...memory.unconfirmed.keys()]]).toEqual([[false], true, ["cbr0\nabc123"]]);
    memory.unconfirmed.set("cbr0\nabc123", Date.now() - CONFIRM_MS);
    const second = await keeperPass([backend], dirs(), memory, OPTIONS);
    // Rebuilt: nothing waits any more.
    expect([rebuilds, second.pending, memory.unconfirmed.size]).toEqual([[false, true], false, 0]);
  });
});
