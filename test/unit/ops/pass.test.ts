import { describe, expect, it } from "vitest";
import { DEAD_CONFIRM_MS, deadChainGoes } from "../../../src/ops/pass.js";

describe("when a dead pod's rules go", () => {
  it("decides when a dead chain goes: conflicting and deleted at once, conflicting after a second look, others after the grace", () => {
    const goes = (conflicting: boolean, deleted: boolean, age: number) =>
      deadChainGoes({ conflicting, deleted, age, graceMs: 30_000 });
    expect([
      goes(true, true, 0),
      goes(true, false, 0),
      goes(true, false, DEAD_CONFIRM_MS),
      goes(false, true, 29_999),
      goes(false, false, 30_000),
    ]).toEqual([true, false, true, false, true]);
  });
});
