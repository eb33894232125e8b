// The nat table through the iptables binaries on PATH, stand-ins printing what the real ones printed
// (test/fixtures/ops, test/fixtures/iptables): the whole table, a transaction, and STATUS's check.
import { describe, expect, it } from "vitest";
import { Code } from "../../../src/core/errors.js";
import { nat } from "../../../src/iptables/nat.js";
import { fixture } from "../fixtures.js";
import { useToolsOnPath } from "../tools.js";

/** The stand-ins, alone on PATH. */
const withTools = useToolsOnPath();

describe("the nat table", () => {
  it("reads the whole table of a family with `iptables -w 5 -t nat -S`", async () => {
    const t = withTools({ ip6tables: [{ stdout: fixture("ops/default-v6.rules") }] });
    expect(await nat().readTable(6)).toBe(fixture("ops/default-v6.rules"));
    expect(t.calls().map((c) => [c.tool, ...c.args])).toEqual([["ip6tables", "-w", "5", "-t", "nat", "-S"]]);
  });

  it("applies a transaction with --noflush and fails with the tool's words", async () => {
    const t = withTools({
      "iptables-restore": [{}],
      "ip6tables-restore": [{ stderr: fixture("iptables/write-failed-v6.stderr"), code: 2 }],
    });
    await nat().restore(4, "*nat\nCOMMIT\n", "a test");
    expect(t.calls()).toEqual([{ tool: "iptables-restore", args: ["-w", "5", "--noflush"], stdin: "*nat\nCOMMIT\n" }]);
    await expect(nat().restore(6, "*nat\nCOMMIT\n", "a test")).rejects.toMatchObject({
      code: Code.IoFailure,
      message: "ip6tables-restore --noflush of a test failed (exit 2)",
    });
  });

  it("is usable when iptables lists POSTROUTING and iptables-restore takes a test transaction", async () => {
    const t = withTools({ iptables: [{ stdout: "-P POSTROUTING ACCEPT\n" }], "iptables-restore": [{}] });
    await nat().checkUsable();
    expect(t.calls().map((c) => [c.tool, ...c.args, c.stdin])).toEqual([
      ["iptables", "-w", "5", "-t", "nat", "-S", "POSTROUTING", ""],
      ["iptables-restore", "-w", "5", "--noflush", "--test", "*nat\nCOMMIT\n"],
    ]);
    withTools({ iptables: [{ stderr: fixture("iptables/not-root-nft.stderr"), code: 4 }] });
    await expect(nat().checkUsable()).rejects.toMatchObject({
      code: Code.IoFailure,
      message: "iptables -t nat -S POSTROUTING failed (exit 4)",
    });
  });

  it("runs a variant's binaries by name", async () => {
    const t = withTools({ "ip6tables-nft": [{ stdout: fixture("ops/default-v6.rules") }] });
    await nat("nft").readTable(6);
    expect(t.calls().map((c) => c.tool)).toEqual(["ip6tables-nft"]);
  });
});
