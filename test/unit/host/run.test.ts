// The subprocess runner: both ways of running a program (side by side, or one at a time with spawnSync) give
// the same result for the same program.
import { describe, expect, it } from "vitest";
import { type Runner, run, runBlocking } from "../../../src/host/run.js";

describe.each([
  ["run", run],
  ["runBlocking", runBlocking],
] as [string, Runner][])("%s", (_name, runner) => {
  it("passes stdin through and collects stdout and the exit code", async () => {
    const r = await runner("cat", [], { input: "*nat\nCOMMIT\n", timeoutMs: 10_000 });
    expect(r).toMatchObject({ code: 0, stdout: "*nat\nCOMMIT\n", stderr: "", timedOut: false, signal: null });
  });

  it("reports a failing program's exit code and stderr", async () => {
    const r = await runner("ls", ["/nonexistent-pmh"], { timeoutMs: 10_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("/nonexistent-pmh");
    expect(r.timedOut).toBe(false);
  });

  it("kills a program at its limit: code 124, and says so", async () => {
    const r = await runner("sleep", ["30"], { timeoutMs: 200 });
    expect(r).toMatchObject({ code: 124, timedOut: true, signal: "SIGKILL" });
    expect(r.stderr).toMatch(/sleep killed: no exit within 200 ms$/);
  });

  it("rejects when the program cannot be started", async () => {
    await expect(runner("/nonexistent/pmh-tool", [], { timeoutMs: 10_000 })).rejects.toThrow(/ENOENT/);
  });
});
