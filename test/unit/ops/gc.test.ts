// Garbage collection of dead pods' rules: `portmap-hostip gc` without a result cache, and CNI GC (the runtime
// names a network's valid attachments) with backends of the tests' own.
import { afterEach, describe, expect, it, vi } from "vitest";
import type { Collected, NodeRules, RuleBackend } from "../../../src/backends/backend.js";
import { runOps } from "../../../src/cli/ops.js";
import { Code } from "../../../src/core/errors.js";
import type { Liveness } from "../../../src/host/liveness.js";
import { cniGc } from "../../../src/ops/gc.js";
import { fakeBackend } from "../fake-backend.js";

function io() {
  let out = "";
  let err = "";
  return {
    ctx: { stdout: (t: string) => void (out += t), stderr: (t: string) => void (err += t) },
    out: () => out,
    err: () => err,
  };
}

describe("gc without a result cache", () => {
  it("refuses to judge, even for a named network", async () => {
    const o = io();
    expect(await runOps("gc", ["--network", "cbr0", "--cache-dir", "/nonexistent/cni"], o.ctx)).toBe(1);
    expect(o.err()).toContain(
      "no result cache at /nonexistent/cni/results (--cache-dir): refusing to judge which chains are dead",
    );
  });
});

describe("CNI GC", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });
  const GC = {
    cniVersion: "1.1.0",
    name: "cbr0",
    type: "portmap-hostip",
    "cni.dev/valid-attachments": [{ containerID: "abc123", ifname: "eth0" }],
  };
  /** A backend of `kind` whose rules, read, note the verdict they are collected by and report `collected`. */
  const backend = (
    name: string,
    kind: RuleBackend["kind"],
    verdicts: Liveness[],
    read: Partial<NodeRules> = {},
    collected: Collected[] = [],
  ): RuleBackend => {
    const b: RuleBackend = fakeBackend(name, {
      kind,
      read: async () => ({
        backend: b,
        families: [4, 6],
        problems: [],
        text: "",
        portmapWrote: true,
        tablesExist: true,
        keyOf: (pod) => pod.containerId,
        pods: () => [],
        holds: () => false,
        collect: async (dead, dryRun) => {
          expect(dryRun).toBe(false);
          verdicts.push(dead);
          return collected;
        },
        keep: async () => ({ families: [], problems: [] }),
        ...read,
      }),
    });
    return b;
  };

  it("collects the named network's chains of containers not in the valid attachments, never another network's", async () => {
    const verdicts: Liveness[] = [];
    await cniGc([backend("iptables", "iptables", verdicts)], GC);
    const [dead] = verdicts;
    expect([dead!("cbr0", "abc123"), dead!("cbr0", "def456"), dead!("other", "def456")]).toEqual([
      "live",
      "dead",
      "live",
    ]);
  });

  it("takes the older key cni.dev/attachments too, and judges nothing without either", async () => {
    const verdicts: Liveness[] = [];
    const { "cni.dev/valid-attachments": valid, ...bare } = GC;
    await cniGc([backend("iptables", "iptables", verdicts)], { ...bare, "cni.dev/attachments": valid });
    expect(verdicts.map((dead) => dead("cbr0", "abc123"))).toEqual(["live"]);
    await cniGc([backend("iptables", "iptables", verdicts)], bare);
    expect(verdicts).toHaveLength(1);
  });

  it("never reads portmap's nftables rules: they name no network", async () => {
    const verdicts: Liveness[] = [];
    await cniGc([backend("iptables", "iptables", verdicts), fakeBackend("nftables", { kind: "nftables" })], GC);
    expect(verdicts).toHaveLength(1);
  });

  it("says on stderr what it could not read or left alone, and fails (5) when it read no family at all", async () => {
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    const left = [
      { family: 4 as const, removed: [], leftAlone: ["IPv4 CNI-DN-x: referenced outside CNI-HOSTPORT-DNAT"] },
    ];
    await cniGc(
      [backend("iptables", "iptables", [], { families: [4], problems: ["IPv6 nat table not read: boom"] }, left)],
      GC,
    );
    expect(stderr.mock.calls.map(([text]) => String(text))).toEqual([
      "portmap-hostip GC: IPv6 nat table not read: boom\n",
      "portmap-hostip GC: IPv4 CNI-DN-x: referenced outside CNI-HOSTPORT-DNAT\n",
    ]);
    const none = backend("iptables", "iptables", [], {
      families: [],
      problems: ["IPv4 nat table not read: a", "IPv6 nat table not read: b"],
    });
    await expect(cniGc([none], GC)).rejects.toMatchObject({
      code: Code.IoFailure,
      message: "IPv4 nat table not read: a; IPv6 nat table not read: b",
    });
  });
});
