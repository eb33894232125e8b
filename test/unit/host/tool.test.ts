// A rule tool run for the plugin: its failures as CNI errors (missing: NotInstalled; killed at the limit: 11).
import { describe, expect, it } from "vitest";
import { Code } from "../../../src/core/errors.js";
import { runBlocking } from "../../../src/host/run.js";
import { NotInstalled, runTool, toolFailure } from "../../../src/host/tool.js";
import { fixture } from "../fixtures.js";

describe("a tool run for the plugin", () => {
  it("gives the tool's own result, whatever its exit code", async () => {
    expect(await runTool("cat", [], 10_000, "*nat\nCOMMIT\n", runBlocking)).toMatchObject({
      code: 0,
      stdout: "*nat\nCOMMIT\n",
    });
    expect((await runTool("ls", ["/nonexistent-pmh"], 10_000)).code).toBe(2);
  });

  it("is NotInstalled (5) when the program is missing", async () => {
    const missing = await runTool("/nonexistent/pmh-tool", [], 10_000).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(NotInstalled);
    expect(missing).toMatchObject({
      code: Code.IoFailure,
      message: expect.stringMatching(/^cannot run \/nonexistent\/pmh-tool: .*ENOENT/),
    });
  });

  it("is 11 (try again later) when the limit killed it", async () => {
    await expect(runTool("sleep", ["30"], 200, undefined, runBlocking)).rejects.toMatchObject({
      code: Code.TryAgainLater,
      message: "sleep did not finish within 200 ms and was killed",
      details: "sleep killed: no exit within 200 ms",
    });
  });

  it("words a failed run with the tool's stderr: 11 when it says busy, else 5", () => {
    const result = {
      code: 4,
      stdout: "",
      stderr: fixture("iptables/not-root-nft.stderr"),
      timedOut: false,
      signal: null,
      ns: 0,
    };
    expect(toolFailure("iptables -t nat -S", result, /xtables lock/)).toMatchObject({
      code: Code.IoFailure,
      message: "iptables -t nat -S failed (exit 4)",
      details: fixture("iptables/not-root-nft.stderr").trim(),
    });
    expect(toolFailure("iptables -t nat -S", result, /Permission denied/).code).toBe(Code.TryAgainLater);
  });
});
