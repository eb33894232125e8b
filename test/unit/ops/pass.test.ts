// One keeper pass (the keeper's, reconcile's and gc's): when a dead pod's rules go, what a pass hands each
// backend, and which networks it keeps: ours (their cached conflist has our entry, or it is the installed
// conflist's network) for the keeper and reconcile, every cached network for gc. The backends are the tests' own; the result cache is libcni's layout in a temporary directory, the
// node's network printed by a stand-in `ip` (test/fixtures/host).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  type BackendPass,
  emptyOutcome,
  fallbackEntry,
  type NodeRules,
  type PassOptions,
} from "../../../src/backends/backend.js";
import { parseCacheFile } from "../../../src/host/cache.js";
import { writeRecord } from "../../../src/host/record.js";
import { CONFIRM_MS, DEAD_CONFIRM_MS, deadChainGoes, keeperPass, newMemory, passScope } from "../../../src/ops/pass.js";
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
    scope: "ours",
    managed: undefined,
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
  /** `alone`: the backend reports the pod's rules gone where portmap's others remain. */
  const holder = (passes: BackendPass[], rebuilds: boolean[] = [], alone = false) => {
    const backend = fakeBackend("b", {
      read: async (): Promise<NodeRules> => ({
        backend,
        families: [4],
        problems: ["b: one family not read"],
        text: "",
        portmapWrote: true,
        tablesExist: true,
        keyOf: (pod) => pod.containerId,
        pods: () => [],
        holds: (pod) => pod.containerId === "abc123",
        collect: async () => [],
        keep: async (pass) => {
          // As a backend asks when a live attachment's rules need a rebuild.
          rebuilds.push(...pass.live.map((l) => pass.mayRebuild(l.key, alone)));
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
      problems: [`no result cache at ${join(dirs().cacheDir, "results")} yet (--cache-dir): nothing to rebuild from`],
      pending: false,
      dead: 0,
      otherNetworks: [],
      unjudged: [],
      unread: [],
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
    expect(report.unread).toEqual(["a"]);
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

  it("rebuilds a recorded pod at once after a flush, after a second look when its rules alone are gone", async () => {
    cached();
    writeRecord(dirs().stateDir, "cbr0", "abc123", "added");
    const rebuilds: boolean[] = [];
    await keeperPass([holder([], rebuilds, false)], dirs(), newMemory(), OPTIONS);
    // portmap's other rules still there: a DEL run without our entry in the list looks so, until libcni drops it.
    const memory = newMemory();
    const alone = holder([], rebuilds, true);
    const first = await keeperPass([alone], dirs(), memory, OPTIONS);
    expect([rebuilds, first.pending]).toEqual([[true, false], true]);
    memory.unconfirmed.set("cbr0\nabc123", Date.now() - CONFIRM_MS);
    await keeperPass([alone], dirs(), memory, OPTIONS);
    expect(rebuilds).toEqual([true, false, true]);
  });
});

const ENTRY = { type: "portmap-hostip", defaultHostIP: "node" };

function attachment(network: string, id: string, ours: boolean) {
  const plugins = [{ type: "bridge" }, { type: "portmap" }, ...(ours ? [ENTRY] : [])];
  const text = cacheEntryJson({
    list: { name: network, cniVersion: "1.0.0", plugins },
    containerID: id,
    ifName: "eth0",
    result: { cniVersion: "1.0.0", ips: [] },
  });
  return parseCacheFile(text, `${network}-${id}`, 0);
}

// cbr0: the managed conflist's network, one pod started while flannel's rewrite had removed our entry;
// annotated: a network whose conflist has our entry; plain: a Multus-style second network without it.
const ATTACHMENTS = [
  attachment("cbr0", "a1", true),
  attachment("cbr0", "w1", false),
  attachment("annotated", "b1", true),
  attachment("plain", "p1", false),
];
const managed = { network: "cbr0", entry: ENTRY };
const options = (o: Partial<PassOptions>) => ({ networks: [], scope: "ours" as const, managed, ...o });

describe("the keeper's and reconcile's networks", () => {
  it("are those with our entry and the managed one; the others are named and left alone", () => {
    const scope = passScope(ATTACHMENTS, options({}));
    expect(["cbr0", "annotated", "plain"].map(scope.keeps)).toEqual([true, true, false]);
    expect([...scope.judged].sort()).toEqual(["annotated", "cbr0"]);
    expect(scope.others).toEqual(["plain"]);
  });

  it("without a managed conflist, only those with our entry", () => {
    const scope = passScope(ATTACHMENTS, options({ managed: undefined }));
    expect(["cbr0", "annotated", "plain"].map(scope.keeps)).toEqual([true, true, false]);
    expect(passScope([attachment("cbr0", "w1", false)], options({ managed: undefined })).keeps("cbr0")).toBe(false);
  });

  it("the managed network's dead chains are judged even when no pod of it is cached", () => {
    expect([...passScope([], options({})).judged]).toEqual(["cbr0"]);
  });

  it("--network narrows them, and names no other network", () => {
    const scope = passScope(ATTACHMENTS, options({ networks: ["annotated", "plain"] }));
    expect(["cbr0", "annotated", "plain"].map(scope.keeps)).toEqual([false, true, false]);
    expect([...scope.judged]).toEqual(["annotated"]);
    expect(scope.others).toEqual(["plain"]);
  });

  it("the managed entry scopes only the managed network's pods that lack ours", () => {
    expect(ATTACHMENTS.map((a) => fallbackEntry(managed, a))).toEqual([ENTRY, ENTRY, undefined, undefined]);
  });
});

describe("gc's networks", () => {
  it("are every network the cache names", () => {
    const scope = passScope(ATTACHMENTS, { networks: [], scope: "cached", managed: undefined });
    expect(["cbr0", "annotated", "plain"].map(scope.keeps)).toEqual([true, true, true]);
    expect([...scope.judged].sort()).toEqual(["annotated", "cbr0", "plain"]);
    expect(scope.others).toEqual([]);
  });
});
