// How the keeper, reconcile and gc word what a pass did: each line names its family (or backend) first.
import { describe, expect, it } from "vitest";
import { emptyOutcome, type Removed } from "../../../src/backends/backend.js";
import { changeLines, droppedLine, familyLabel, removedText } from "../../../src/ops/report.js";

const chain: Removed = {
  containerId: "def456",
  chain: { name: "CNI-DN-7d8bb303737095628cf38", network: "cbr0", jumps: 1 },
};
const nft: Removed = { containerId: "def456", rules: 3 };

describe("a pass's report", () => {
  it("names the iptables on PATH by family alone, another backend before the family, one working on both by name", () => {
    expect(
      [
        emptyOutcome("iptables", 4),
        emptyOutcome("iptables", 6),
        emptyOutcome("iptables-legacy", 6),
        emptyOutcome("nftables", undefined),
      ].map(familyLabel),
    ).toEqual(["IPv4", "IPv6", "iptables-legacy IPv6", "nftables"]);
  });

  it("names a dead pod's chain with its network and jumps (iptables), or counts its rules (nftables)", () => {
    expect([removedText(chain, true), removedText(chain, false), removedText(nft, true)]).toEqual([
      "dead CNI-DN-7d8bb303737095628cf38 (network cbr0, container def456) and 1 jump(s)",
      "CNI-DN-7d8bb303737095628cf38 (network cbr0, container def456) and 1 jump(s)",
      "3 rule(s) of dead container def456",
    ]);
    expect(removedText({ containerId: "x" }, false)).toBe("0 rule(s) of container x");
  });

  it("lists dead pods' rules first, then what was left alone, then the other changes", () => {
    expect(
      changeLines({
        ...emptyOutcome("iptables", 4),
        removed: [chain],
        leftAlone: ["IPv4 CNI-DN-x (network cbr0, container a): referenced outside CNI-HOSTPORT-DNAT"],
        actions: ["default/a: rebuilt CNI-DN-3e9a3d0f9583cdc0e7133"],
      }),
    ).toEqual([
      "deleted dead CNI-DN-7d8bb303737095628cf38 (network cbr0, container def456) and 1 jump(s)",
      "left alone IPv4 CNI-DN-x (network cbr0, container a): referenced outside CNI-HOSTPORT-DNAT",
      "default/a: rebuilt CNI-DN-3e9a3d0f9583cdc0e7133",
    ]);
    expect(changeLines(emptyOutcome("nftables", undefined))).toEqual([]);
  });

  it("counts the stale UDP conntrack entries removed", () => {
    expect([1, 2].map((n) => droppedLine({ ...emptyOutcome("iptables", 4), droppedUdp: n }))).toEqual([
      "removed 1 stale UDP conntrack entry",
      "removed 2 stale UDP conntrack entries",
    ]);
  });
});
