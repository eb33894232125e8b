// The operator subcommands' command lines: help (every flag in the usage line, and explained once) and refusals.
import { describe, expect, it } from "vitest";
import { OPS_FLAGS, runOps, USAGE } from "../../../src/cli/ops.js";
import { optionLines } from "./help-text.js";

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

describe.each(Object.keys(OPS_FLAGS))("%s --help", (command) => {
  it("names every flag in its usage line and explains each once", async () => {
    const o = io();
    expect(await runOps(command as "status", ["--help"], o.ctx)).toBe(0);
    expect(o.out()).toBe(USAGE[command]);
    const [usage = "", ...body] = o.out().split("\n");
    const flags = OPS_FLAGS[command] ?? [];
    for (const flag of flags.filter((f) => f !== "help")) expect(usage, flag).toContain(`[--${flag}`);
    expect([...optionLines(body.join("\n")).values()].flat().sort()).toEqual([...flags].sort());
  });
});
