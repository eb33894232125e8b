// status on a node with both iptables variants: each row says whose table it is in, and a node where both
// variants hold hostPort rules is warned about (portmap reads and deletes in one of them only).
import { describe, expect, it } from "vitest";
import { iptablesBackend } from "../../../src/backends/iptables.js";
import { natRules } from "../../../src/backends/iptables-node.js";
import type { IptablesVariant } from "../../../src/core/node.js";
import { judge } from "../../../src/host/liveness.js";
import { nat } from "../../../src/iptables/nat.js";
import { status, variantWarnings } from "../../../src/ops/status.js";
import { fixture, NODE } from "../fixtures.js";

const NO_CACHE = { dir: "/cache/results", present: false, attachments: [], unreadable: [], problems: [] };
/** A variant's nat table as recorded (both families of test/fixtures/ops/NAME), or empty. */
const table = (v: IptablesVariant, name?: string) =>
  natRules(
    iptablesBackend(v),
    nat(v),
    new Map(([4, 6] as const).map((f) => [f, name ? fixture(`ops/${name}-v${f}.rules`) : "-P PREROUTING ACCEPT\n"])),
  );

describe("status on a node with both iptables variants", () => {
  it("names each row's table", () => {
    const rows = status(
      [table("legacy", "default"), table("nft")],
      NO_CACHE,
      NODE,
      judge({ cache: NO_CACHE, records: new Map(), now: 0 }),
    );
    expect(rows.length).toBeGreaterThan(0);
    expect(new Set(rows.map((r) => r.backend))).toEqual(new Set(["iptables-legacy"]));
  });

  it("warns when both variants hold hostPort rules, and only then", () => {
    expect(variantWarnings([table("legacy", "default"), table("nft")])).toEqual([]);
    expect(variantWarnings([table("legacy", "default"), table("nft", "default")])).toEqual([
      "iptables-legacy and iptables-nft both hold hostPort rules: portmap reads and deletes them in one only, the one the node's CNI plugins run (the TABLE column says which rows are where)",
    ]);
  });
});
