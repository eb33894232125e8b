import { describe, expect, it } from "vitest";
import { runOps } from "../../../src/cli/ops.js";

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
    expect(o.err()).toContain("no result cache at /nonexistent/cni/results: refusing to judge which chains are dead");
  });
});
