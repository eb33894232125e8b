// The operator subcommands' command line: help, refusals, and the conntrack step without the tool.
import { afterEach, describe, expect, it, vi } from "vitest";
import { runCli } from "../../src/cli/main.js";
import { runOps } from "../../src/cli/ops.js";
import { selectsNetwork } from "../../src/host/cache.js";
import { dropStaleUdp, procSource } from "../../src/pipeline/conntrack.js";
import { chainOf, rules } from "./fixtures.js";

afterEach(() => {
  vi.unstubAllEnvs();
  vi.restoreAllMocks();
});

function io() {
  let out = "";
  let err = "";
  return {
    ctx: { stdout: (t: string) => void (out += t), stderr: (t: string) => void (err += t) },
    out: () => out,
    err: () => err,
  };
}

describe("portmap-hostip status | reconcile | gc", () => {
  it("are listed in --help", async () => {
    const write = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
    expect(await runCli(["--help"])).toBe(0);
    const help = write.mock.calls.map(([c]) => String(c)).join("");
    for (const line of ["portmap-hostip status [--json]", "portmap-hostip reconcile", "portmap-hostip gc [--dry-run]"])
      expect(help).toContain(line);
  });

  it("each explain their options", async () => {
    for (const [command, flags] of [
      ["status", ["--cache-dir", "--network", "--json"]],
      ["reconcile", ["--cache-dir", "--network", "--dry-run"]],
      ["gc", ["--network", "--grace", "--dry-run"]],
    ] as const) {
      const o = io();
      expect(await runOps(command, ["--help"], o.ctx)).toBe(0);
      for (const f of flags) expect(o.out()).toContain(f);
    }
  });

  it("refuse unknown options and missing values with exit code 2", async () => {
    const cases: Array<["status" | "reconcile" | "gc", string[], RegExp]> = [
      ["status", ["--dry-run"], /unknown option "--dry-run"/],
      ["reconcile", ["--cache-dir"], /'--cache-dir <value>' argument missing/],
      ["gc", ["--grace", "soon"], /--grace needs a number of seconds/],
      ["gc", ["--network="], /--network needs a value/],
      ["status", ["--network="], /--network needs a value/],
      ["reconcile", ["--network", ""], /--network needs a value/],
    ];
    for (const [command, args, message] of cases) {
      const o = io();
      expect(await runOps(command, args, o.ctx)).toBe(2);
      expect(o.err()).toMatch(message);
    }
  });
});

describe("the UDP conntrack step", () => {
  it("says on stderr, without failing, that the conntrack tool is missing", async () => {
    vi.stubEnv("PATH", "/nonexistent");
    const warnings: string[] = [];
    const unscoped = chainOf("reference-v4");
    const scoped = unscoped.map((r) =>
      r.includes("udp") ? r.replace(/^(-A \S+( -s \S+)?)/, "$1 -d 192.0.2.10/32") : r,
    );
    // Without /proc/net/nf_conntrack the tool lists the flows: the missing tool is what is reported.
    const noProc = procSource("/nonexistent", "/nonexistent");
    expect(
      await dropStaleUdp(4, [{ before: rules(unscoped), after: rules(scoped) }], (t) => warnings.push(t), noProc),
    ).toBe(0);
    expect(warnings).toEqual([
      expect.stringMatching(
        /^conntrack not usable \(.*ENOENT.*\): stale UDP conntrack entries of hostPort 5353 are not removed$/,
      ),
    ]);
  });

  it("runs nothing when no UDP rule changed", async () => {
    vi.stubEnv("PATH", "/nonexistent");
    const warnings: string[] = [];
    expect(
      await dropStaleUdp(4, [{ before: rules(chainOf("reference-v4")), after: rules(chainOf("reference-v4")) }], (t) =>
        warnings.push(t),
      ),
    ).toBe(0);
    expect(warnings).toEqual([]);
  });
});

describe("gc without a result cache", () => {
  it("refuses to judge, even for a named network", async () => {
    const o = io();
    expect(await runOps("gc", ["--network", "cbr0", "--cache-dir", "/nonexistent/cni"], o.ctx)).toBe(1);
    expect(o.err()).toContain("no result cache at /nonexistent/cni/results (--cache-dir): refusing to judge which chains are dead");
  });
});

describe("--network", () => {
  it("selects the named networks only, and every network when none is named", () => {
    expect(selectsNetwork([], "cbr0")).toBe(true);
    expect(selectsNetwork([], null)).toBe(true);
    expect(selectsNetwork(["cbr0", "net2"], "net2")).toBe(true);
    expect(selectsNetwork(["cbr0"], "net2")).toBe(false);
    // A chain nothing attributes to a network belongs to none that was named.
    expect(selectsNetwork(["cbr0"], null)).toBe(false);
  });
});
