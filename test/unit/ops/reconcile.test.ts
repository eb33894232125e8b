// `portmap-hostip reconcile`: the keeper's pass, rebuilding, with no grace for dead pods' rules, run again while
// something waits for a second look. The backend is the test's own; the result cache is libcni's layout in a
// temporary directory, the node's network printed by a stand-in `ip` (test/fixtures/host).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { emptyOutcome, type NodeRules, type PassOptions } from "../../../src/backends/backend.js";
import { reconcile } from "../../../src/ops/reconcile.js";
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
        portmapWrote: true,
        tablesExist: true,
        keyOf: (pod) => pod.containerId,
        pods: () => [],
        holds: () => true,
        collect: async () => [],
        keep: async (pass) => {
          passes.push({ options: pass.options, rebuild: pass.live.map((l) => pass.mayRebuild(l.key)) });
          return { families: [emptyOutcome("b", 4)], problems: [] };
        },
      }),
    });
    const report = await reconcile([backend], {
      cacheDir: join(dir, "cache"),
      stateDir: join(dir, "state"),
      dryRun: true,
      networks: [],
      fallbackEntry: undefined,
      cniBinDir: "/opt/cni/bin",
      cniIptables: undefined,
    });
    expect(passes.map((p) => p.rebuild)).toEqual([[false], [true]]);
    expect(passes[0]?.options).toMatchObject({ rebuild: true, graceMs: Infinity, conflictsFirst: true, dryRun: true });
    expect(report.pending).toBe(false);
  });
});
