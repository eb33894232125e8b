// reconcile's report over its passes: every change of every pass, once, and a dry run's the same as a real run's.
import { describe, expect, it } from "vitest";
import { emptyOutcome, type FamilyOutcome } from "../../../src/backends/backend.js";
import type { PassReport } from "../../../src/ops/pass.js";
import { mergePasses } from "../../../src/ops/reconcile.js";

const report = (families: FamilyOutcome[], pending = false): PassReport => ({
  judged: true,
  families,
  problems: [],
  pending,
  dead: 0,
  otherNetworks: [],
  unjudged: [],
});

const family = (o: Partial<FamilyOutcome>): FamilyOutcome => ({ ...emptyOutcome("iptables", 4), ...o });

const SHARED = "created chain CNI-HOSTPORT-DNAT";
const A = "default/a (cbr0, a1): created (3 rules) CNI-DN-a";
const B = "default/b (cbr0, b1): created (3 rules) CNI-DN-b";
// A pod without a record of its ADD: rebuilt only after a second look.
const C = "default/c (cbr0, c1): created (3 rules) CNI-DN-c";
const DEAD = { containerId: "d1", chain: { name: "CNI-DN-d", network: "cbr0", jumps: 1 } };

describe("reconcile after a flush, three pods, one without a record of its ADD", () => {
  it("a real run reports the changes of both passes, and counts both transactions", () => {
    const merged = mergePasses(
      [
        report([family({ actions: [SHARED, A, B], removed: [DEAD], rebuilt: 2, lines: 12, waiting: ["c"] })], true),
        report([family({ actions: [C], rebuilt: 1, correct: 2, lines: 4 })]),
      ],
      false,
    );
    expect(merged.families).toEqual([
      expect.objectContaining({
        actions: [SHARED, A, B, C],
        removed: [DEAD],
        correct: 0,
        rebuilt: 3,
        lines: 16,
        transactions: 2,
        waiting: [],
      }),
    ]);
  });

  it("its dry run, which writes nothing and so plans again at its second look, reports the same", () => {
    const merged = mergePasses(
      [
        report([family({ actions: [SHARED, A, B], removed: [DEAD], rebuilt: 2, lines: 12, waiting: ["c"] })], true),
        report([family({ actions: [SHARED, A, C, B], removed: [DEAD], rebuilt: 3, lines: 16 })]),
      ],
      true,
    );
    expect(merged.families).toEqual([
      expect.objectContaining({
        actions: [SHARED, A, B, C],
        removed: [DEAD],
        correct: 0,
        rebuilt: 3,
        lines: 16,
        transactions: 2,
      }),
    ]);
  });

  it("says a failed write once per failure, and counts only the writes that went through", () => {
    const merged = mergePasses(
      [
        report([family({ actions: [A], rebuilt: 1, lines: 3, failure: "iptables-restore: exit 1" })], true),
        report([family({ actions: [A], rebuilt: 1, lines: 3 })]),
      ],
      false,
    );
    expect(merged.families[0]).toMatchObject({ failure: "iptables-restore: exit 1", transactions: 1, rebuilt: 2 });
  });

  it("keeps families and problems apart and each problem once", () => {
    const v6 = { ...emptyOutcome("iptables", 6), correct: 3 };
    const merged = mergePasses(
      [
        { ...report([family({ correct: 3 }), v6], true), problems: ["p"] },
        { ...report([family({ correct: 3 }), v6]), problems: ["p"] },
      ],
      false,
    );
    expect(merged.families.map((f) => [f.family, f.correct, f.transactions])).toEqual([
      [4, 3, 0],
      [6, 3, 0],
    ]);
    expect(merged.problems).toEqual(["p"]);
  });
});
