// `portmap-hostip reconcile`: the keeper's pass, rebuilding, with no grace for dead pods' rules, run again while
// something waits for a second look; its report holds every change of every pass, a dry run's the same. The backend is the test's own; the result cache is libcni's layout in a
// temporary directory, the node's network printed by a stand-in `ip` (test/fixtures/host).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { emptyOutcome, type FamilyOutcome, type NodeRules, type PassOptions } from "../../../src/backends/backend.js";
import type { PassReport } from "../../../src/ops/pass.js";
import { mergePasses, reconcile } from "../../../src/ops/reconcile.js";
import { cacheEntryJson, cacheFileName } from "../../support/result-cache.js";
import { fakeBackend } from "../fake-backend.js";
import { IP, standInTools, type Tools } from "../tools.js";

let dir: string;
let tools: Tools;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "pmh-reconcile-"));
  tools = standInTools({ ip: IP });
  vi.stubEnv("PATH", tools.bin);
  const entry = {
    list: { name: "cbr0", cniVersion: "1.0.0", plugins: [{ type: "portmap" }, { type: "portmap-hostip" }] },
    containerID: "abc123",
    ifName: "eth0",
    result: { cniVersion: "1.0.0", ips: [{ address: "10.244.1.5/24" }] },
  };
  mkdirSync(join(dir, "cache", "results"), { recursive: true });
  writeFileSync(join(dir, "cache", "results", cacheFileName(entry)), cacheEntryJson(entry));
});
afterEach(() => {
  vi.unstubAllEnvs();
  tools.remove();
  rmSync(dir, { recursive: true, force: true });
});

describe("reconcile", () => {
  it("rebuilds, never collects by the grace, and looks again while an attachment without a record waits", async () => {
    const passes: Array<{ options: PassOptions; rebuild: boolean[] }> = [];
    const backend = fakeBackend("b", {
      read: async (): Promise<NodeRules> => ({
        backend,
        families: [4],
        problems: [],
        text: "",
        portmapWrote: true,
        tablesExist: true,
        keyOf: (pod) => pod.containerId,
        pods: () => [],
        holds: () => true,
        collect: async () => [],
        keep: async (pass) => {
          passes.push({ options: pass.options, rebuild: pass.live.map((l) => pass.mayRebuild(l.key, false)) });
          return { families: [emptyOutcome("b", 4)], problems: [] };
        },
      }),
    });
    const report = await reconcile([backend], {
      cacheDir: join(dir, "cache"),
      stateDir: join(dir, "state"),
      dryRun: true,
      networks: [],
      managed: undefined,
      cniBinDir: "/opt/cni/bin",
      cniIptables: undefined,
    });
    expect(passes.map((p) => p.rebuild)).toEqual([[false], [true]]);
    expect(passes[0]?.options).toMatchObject({ rebuild: true, graceMs: Infinity, conflictsFirst: true, dryRun: true });
    expect(report.pending).toBe(false);
  });
});

const report = (families: FamilyOutcome[], pending = false): PassReport => ({
  judged: true,
  families,
  problems: [],
  pending,
  dead: 0,
  otherNetworks: [],
  unjudged: [],
  read: true,
  unread: [],
});

const family = (o: Partial<FamilyOutcome>): FamilyOutcome => ({ ...emptyOutcome("iptables", 4), ...o });

const SHARED = "created chain CNI-HOSTPORT-DNAT";
const A = "default/a (cbr0, a1): created (3 rules) CNI-DN-a";
const B = "default/b (cbr0, b1): created (3 rules) CNI-DN-b";
// A pod without a record of its ADD: rebuilt only after a second look.
const C = "default/c (cbr0, c1): created (3 rules) CNI-DN-c";
const DEAD = { containerId: "d1", chain: { name: "CNI-DN-d", network: "cbr0", jumps: 1 } };

describe("reconcile after a flush, three pods, one without a record of its ADD", () => {
  // What a run writes over its two passes: the shared chain and the two pods with a record, then the third.
  const FIRST_PASS = family({ actions: [SHARED, A, B], removed: [DEAD], rebuilt: 2, lines: 12, waiting: ["c"] });
  const REPORTED = { actions: [SHARED, A, B, C], removed: [DEAD], correct: 0, rebuilt: 3, lines: 16, transactions: 2 };

  it("a real run reports the changes of both passes, and counts both transactions", () => {
    const second = family({ actions: [C], rebuilt: 1, correct: 2, lines: 4 });
    const merged = mergePasses([report([FIRST_PASS], true), report([second])], false);
    expect(merged.families).toEqual([expect.objectContaining({ ...REPORTED, waiting: [] })]);
  });

  it("its dry run, which writes nothing and so plans again at its second look, reports the same", () => {
    const second = family({ actions: [SHARED, A, C, B], removed: [DEAD], rebuilt: 3, lines: 16 });
    const merged = mergePasses([report([FIRST_PASS], true), report([second])], true);
    expect(merged.families).toEqual([expect.objectContaining({ ...REPORTED, waiting: [] })]);
  });

  it("says a failed write once per failure, and counts only the writes that went through", () => {
    const merged = mergePasses(
      [
        report([family({ actions: [A], rebuilt: 1, lines: 3, failure: "iptables-restore: exit 1" })], true),
        report([family({ actions: [A], rebuilt: 1, lines: 3 })]),
      ],
      false,
    );
    expect(merged.families[0]).toMatchObject({ failure: "iptables-restore: exit 1", transactions: 1, rebuilt: 2 });
  });

  it("keeps families and problems apart and each problem once", () => {
    const v6 = { ...emptyOutcome("iptables", 6), correct: 3 };
    const merged = mergePasses(
      [
        { ...report([family({ correct: 3 }), v6], true), problems: ["p"] },
        { ...report([family({ correct: 3 }), v6]), problems: ["p"] },
      ],
      false,
    );
    expect(merged.families.map((f) => [f.family, f.correct, f.transactions])).toEqual([
      [4, 3, 0],
      [6, 3, 0],
    ]);
    expect(merged.problems).toEqual(["p"]);
  });
});
