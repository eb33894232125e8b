import { describe, expect, it } from "vitest";
import { parseTable, portmapJumps } from "../../../src/iptables/table.js";
import { fixture } from "../fixtures.js";

describe("portmap's jumps", () => {
  it("are attributed only when the comment and the chain name agree", () => {
    const t = parseTable(fixture("ops/default-v4.rules"));
    expect(portmapJumps(t).map((j) => [j.index, j.owner?.network, j.owner?.containerId])).toEqual([
      [0, "cbr0", "abc123"],
      [1, "cbr0", "abc123"],
      [2, "cbr0", "def456"],
      [3, "other", "abc999"],
    ]);
    const forged = parseTable(fixture("ops/default-v4.rules").replace('id: \\"def456\\"', 'id: \\"zzz\\"'));
    expect(portmapJumps(forged)[2]?.owner).toBeUndefined();
  });

  it("of a network name cut to 255 characters attribute nothing", () => {
    expect(portmapJumps(parseTable(fixture("ops/longname-v4.rules"))).map((j) => j.owner)).toEqual([undefined]);
  });
});
